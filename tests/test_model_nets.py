"""Architectures: the paper's parameter count, shapes per preset, config round-trips, MC-dropout, model info."""

import pytest
import torch

from diffcurate.common.errors import InputError
from diffcurate.model.nets import (
    EDCNNConfig,
    build_model,
    config_from_dict,
    config_to_dict,
    count_parameters,
    default_model_config,
    enable_mc_dropout,
    model_info,
)

torch.set_num_threads(1)
LATTICE = {"paper": 512, "small": 64, "tiny": 32}


def test_paper_edcnn_has_50307969_parameters():
    with torch.device("meta"):
        model = build_model(default_model_config("paper", "edcnn"))
    assert count_parameters(model) == 50_307_969
    assert count_parameters(model.encoder) == 25_145_984
    assert count_parameters(model.decoder) == 25_161_985
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 1
    assert sum(isinstance(m, torch.nn.AvgPool2d) for m in model.modules()) == 5
    assert sum(isinstance(m, torch.nn.Upsample) for m in model.modules()) == 5


def test_paper_edcnn_shapes_on_meta():
    with torch.device("meta"):
        model = build_model(default_model_config("paper", "edcnn"))
        mid = model.encoder(torch.empty(2, 1, 512, 512))
        out = model(torch.empty(2, 1, 512, 512))
    assert tuple(mid.shape) == (2, 2048, 16, 16)  # the paper's bottleneck
    assert tuple(out.shape) == (2, 1, 512, 512)


@pytest.mark.parametrize("preset", ["small", "tiny"])
@pytest.mark.parametrize("arch", ["edcnn", "unet"])
def test_output_shapes(preset, arch):
    L = LATTICE[preset]
    model = build_model(default_model_config(preset, arch)).eval()
    with torch.no_grad():
        out = model(torch.rand(3, 1, L, L))
    assert out.shape == (3, 1, L, L) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_paper_unet_shape_on_meta():
    with torch.device("meta"):
        out = build_model(default_model_config("paper", "unet"))(torch.empty(1, 1, 512, 512))
    assert tuple(out.shape) == (1, 1, 512, 512)


@pytest.mark.parametrize("arch", ["edcnn", "unet"])
def test_config_round_trip_is_plain_data(arch):
    cfg = default_model_config("small", arch)
    d = config_to_dict(cfg)
    assert all(isinstance(v, int | float | str | list) for v in d.values())
    assert config_from_dict(d) == cfg
    a, b = build_model(cfg), build_model(d)
    assert [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]


def test_bad_configs_are_input_errors():
    with pytest.raises(InputError, match="unknown model"):
        default_model_config("small", "transformer")
    with pytest.raises(InputError, match="unknown keys"):
        config_from_dict({"arch": "edcnn", "width": 3})
    with pytest.raises(InputError, match="enc_channels"):  # the wrong type, caught before a net is built
        config_from_dict({"arch": "edcnn", "enc_channels": "wide"})
    with pytest.raises(InputError, match="divisible"):
        model_info(default_model_config("small", "edcnn"), lattice=60)


def test_mc_dropout_switches_only_dropout_on():
    cfg = EDCNNConfig(enc_channels=(8, 16, 32), dec_channels=(16, 8), dropout=0.3)
    model = build_model(cfg)
    x = torch.rand(2, 1, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        enable_mc_dropout(model)
        assert not torch.equal(model(x), model(x))
    assert not model.encoder[1].training  # BatchNorm stays in eval mode
    assert build_model(default_model_config("small", "edcnn")).decoder[0].__class__ is not torch.nn.Dropout2d


def test_model_info_paper():
    info = model_info(default_model_config("paper", "edcnn"), 512, batch_size=4)
    assert info["parameters"] == 50_307_969
    # first conv alone: 2 * 1*64*9 * 512^2 FLOPs; the whole net is tens of GFLOPs per sample
    assert info["flops_per_sample"] > 2 * 64 * 9 * 512**2
    assert 1e10 < info["flops_per_sample"] < 1e12
    assert (
        info["train_memory_mb"]
        > info["inference_memory_mb"]
        > info["weights_mb"]
        == pytest.approx(50_307_969 * 4 / 2**20)
    )


def test_model_info_counts_conv_flops_exactly():
    # tiny edcnn by hand: convs 1->8 @32, 8->16 @16, 16->32 @8, convT 32->16 @8, 16->8 @16, 8->1 @32
    macs = 9 * (1 * 8 * 32**2 + 8 * 16 * 16**2 + 16 * 32 * 8**2 + 32 * 16 * 8**2 + 16 * 8 * 16**2 + 8 * 1 * 32**2)
    assert model_info(default_model_config("tiny", "edcnn"), 32)["flops_per_sample"] == 2 * macs


@pytest.mark.parametrize("arch", ["edcnn", "unet"])
def test_embed_gives_bottleneck_features_per_sample(arch):
    net = build_model(default_model_config("tiny", arch)).eval()
    x = torch.rand(3, 1, 32, 32)
    e = net.embed(x)
    assert e.shape[0] == 3 and e.ndim == 2 and e.shape[1] % 16 == 0
    assert torch.allclose(net.embed(x[1:2]), e[1:2], atol=1e-6)  # per sample, no batch coupling in eval
