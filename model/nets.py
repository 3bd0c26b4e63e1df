"""Surrogate architectures behind a name registry, each rebuilt from a plain-data model config.

A checkpoint stores `model_config` as a plain dict (`{"arch": name, **fields}`) next to the state_dict, so
`torch.load(weights_only=True)` reads both and `build_model(config)` rebuilds the exact network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from diffcurate.common.errors import InputError
from diffcurate.common.typed import build_typed


def _act(slope: float) -> nn.Module:
    return nn.LeakyReLU(slope)


def _maybe_dropout(p: float) -> list[nn.Module]:
    """Dropout is off by default; with p > 0 it enables MC-dropout (see `enable_mc_dropout`)."""
    return [nn.Dropout2d(p)] if p > 0 else []


@dataclass
class NetConfig:
    """What every network's config holds besides its own shape: activations, dropout, the channels and scales of
    x and y (the problem's), the optional clamp."""

    slope: float = 0.02  # LeakyReLU negative slope
    dropout: float = 0.0  # dropout rate (> 0 enables the mc-dropout estimator)
    clamp_sources: bool = False  # copy the known disc values of x into the output (fixed sources only)
    in_channels: int = 1  # channels of x (the problem's encode)
    out_channels: int = 1  # channels of y (the problem's solve)
    x_scale: float = 1.0  # the network sees x / x_scale (the problem's `scales`)
    y_scale: float = 1.0  # and answers y / y_scale: targets of order one whatever the problem's units


@dataclass
class EDCNNConfig(NetConfig):
    """The paper's encoder-decoder CNN (Table 1), parametrised so smaller presets keep the block structure.

    Encoder: Conv3x3 per entry of `enc_channels` (BatchNorm after the first only), LReLU, AvgPool(2) after all
    but the last. Decoder: ConvT3x3 per entry of `dec_channels` then a final ConvT3x3 to 1 channel, each followed
    by LReLU; the last `len(enc_channels) - 1` of these convs are preceded by Upsample(x2), so the output has the
    input's size. The bottleneck is enc_channels[-1] x (L / 2^pools)^2."""

    enc_channels: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)  # channels per encoder stage (pooled but the last)
    dec_channels: tuple[int, ...] = (1024, 512, 256, 128, 64, 32)  # channels per decoder stage
    arch: str = "edcnn"  # edcnn (the paper's encoder-decoder) or unet

    @property
    def pools(self) -> int:
        return len(self.enc_channels) - 1

    def check(self, lattice: int | None = None) -> None:
        if len(self.enc_channels) < 1 or len(self.dec_channels) + 1 < self.pools:
            raise InputError("edcnn: need len(dec_channels) + 1 >= number of pools (len(enc_channels) - 1)")
        if lattice is not None and lattice % (2**self.pools):
            raise InputError(
                f"edcnn: lattice {lattice} is not divisible by 2^{self.pools} (its pools; the fno takes any grid)"
            )


def _pooled(h: torch.Tensor) -> torch.Tensor:
    """Bottleneck (B, C, h, w) -> (B, C * 16) features on a 4x4 grid: the network's own view of a configuration,
    for feature-space active learning (curate/acquisition/peers.py)."""
    return nn.functional.adaptive_avg_pool2d(h, 4).flatten(1)


def clamp_known(x: torch.Tensor, out: torch.Tensor, on: bool) -> torch.Tensor:
    """With fixed-value sources the field inside a disc *is* the painted input (x > 0 there), so an optional hard
    constraint copies it instead of asking the network for it: the paper's worst region becomes exact and the
    training signal goes to the field. (B, 1, L, L) each."""
    return torch.where(x > 0, x, out) if on else out


class Scales:
    """x / x_scale in, y_scale * out: the identity (not even a multiply) at the default scales of one, so a
    network of the diffusion problem computes exactly what it always did."""

    def __init__(self, cfg: NetConfig):
        self.x, self.y = float(cfg.x_scale), float(cfg.y_scale)

    def input(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.x == 1.0 else x / self.x

    def output(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.y == 1.0 else y * self.y


class EDCNN(nn.Module):
    """Paper Table 1 (no skip connections): the bottleneck has to carry the whole field."""

    def __init__(self, cfg: EDCNNConfig):
        super().__init__()
        cfg.check()
        self.clamp = cfg.clamp_sources
        enc: list[nn.Module] = []
        cin = cfg.in_channels
        for i, c in enumerate(cfg.enc_channels):
            enc.append(nn.Conv2d(cin, c, 3, padding=1))
            if i == 0:
                enc.append(nn.BatchNorm2d(c))
            enc.append(_act(cfg.slope))
            if i < cfg.pools:
                enc.append(nn.AvgPool2d(2))
            cin = c
        dec: list[nn.Module] = _maybe_dropout(cfg.dropout)
        outs = list(cfg.dec_channels) + [cfg.out_channels]
        first_up = len(outs) - cfg.pools
        for i, c in enumerate(outs):
            if i >= first_up:
                dec.append(nn.Upsample(scale_factor=2, mode="nearest"))
            dec.append(nn.ConvTranspose2d(cin, c, 3, padding=1))
            dec.append(_act(cfg.slope))
            if i < len(outs) - 1:
                dec.extend(_maybe_dropout(cfg.dropout) if i < first_up else [])
            cin = c
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)
        self.scales = Scales(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, C_out, H, W)
        out = self.scales.output(self.decoder(self.encoder(self.scales.input(x))))
        return clamp_known(x, out, self.clamp)

    def embed(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, L, L) -> (B, C * 16)
        return _pooled(self.encoder(self.scales.input(x)))


@dataclass
class UNetConfig(NetConfig):
    """A UNet: `depth` AvgPool levels, channels base * 2^level, two Conv3x3+LReLU per level, skip connections.

    Skips carry the sharp disc edges that an encoder-decoder must otherwise squeeze through its bottleneck."""

    base: int = 16  # channels of the first level (doubling per level)
    depth: int = 3  # number of down-sampling levels
    arch: str = "unet"  # edcnn (the paper's encoder-decoder) or unet

    def check(self, lattice: int | None = None) -> None:
        if self.base < 1 or self.depth < 0:
            raise InputError("unet: base must be >= 1 and depth >= 0")
        if lattice is not None and lattice % (2**self.depth):
            raise InputError(
                f"unet: lattice {lattice} is not divisible by 2^{self.depth} (its depth; the fno takes any grid)"
            )


def _double(cin: int, cout: int, slope: float, p: float = 0.0) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        _act(slope),
        *_maybe_dropout(p),
        nn.Conv2d(cout, cout, 3, padding=1),
        _act(slope),
    )


class UNet(nn.Module):
    def __init__(self, cfg: UNetConfig):
        super().__init__()
        cfg.check()
        self.clamp = cfg.clamp_sources
        ch = [cfg.base * 2**i for i in range(cfg.depth + 1)]
        cin = cfg.in_channels
        self.down = nn.ModuleList([_double(cin if i == 0 else ch[i - 1], ch[i], cfg.slope) for i in range(cfg.depth)])
        self.pool = nn.AvgPool2d(2)
        self.mid = _double(ch[cfg.depth - 1] if cfg.depth else cin, ch[cfg.depth], cfg.slope, cfg.dropout)
        self.up = nn.ModuleList(
            [
                nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch[i + 1], ch[i], 3, padding=1))
                for i in reversed(range(cfg.depth))
            ]
        )
        self.merge = nn.ModuleList([_double(2 * ch[i], ch[i], cfg.slope) for i in reversed(range(cfg.depth))])
        self.head = nn.Conv2d(ch[0], cfg.out_channels, 1)
        self.scales = Scales(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, C_out, H, W)
        h, skips = self._encode(x)
        for up, merge in zip(self.up, self.merge, strict=True):
            h = merge(torch.cat([up(h), skips.pop()], dim=1))
        return clamp_known(x, self.scales.output(self.head(h)), self.clamp)

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips, h = [], self.scales.input(x)
        for block in self.down:
            h = block(h)
            skips.append(h)
            h = self.pool(h)
        return self.mid(h), skips  # (B, base*2^depth, L/2^depth, L/2^depth), one skip per level

    def embed(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, L, L) -> (B, C * 16)
        return _pooled(self._encode(x)[0])


@dataclass
class FNOConfig(NetConfig):
    """The Fourier neural operator (Li et al., ICLR 2021), its Darcy setting by default: the input and the node
    coordinates lifted to `width` channels, `layers` Fourier layers (a spectral convolution keeping `modes` x
    `modes` frequencies plus a pointwise one, GELU between), and a two-layer pointwise projection. The input is
    padded by `padding` nodes on the far sides, as the paper does for a non-periodic domain, and cropped after."""

    modes: int = 12  # Fourier modes kept along each axis (the real FFT's last axis keeps `modes` too)
    width: int = 32  # channels of the Fourier layers
    layers: int = 4
    projection: int = 128  # hidden channels of the projection
    padding: int = 9
    arch: str = "fno"

    def check(self, lattice: int | None = None) -> None:
        if min(self.modes, self.width, self.layers, self.projection) < 1 or self.padding < 0:
            raise InputError("fno: modes, width, layers and projection must be >= 1 and padding >= 0")
        if lattice is not None and self.modes > (lattice + self.padding) // 2 + 1:
            raise InputError(f"fno: {self.modes} modes need a padded grid of >= {2 * self.modes - 2} nodes a side")


class SpectralConv(nn.Module):
    """u -> irfft2(W * rfft2(u)) on the lowest `modes` frequencies of each axis (both signs along the first);
    complex weights stored as real pairs (B, C_in, H, W) -> (B, C_out, H, W)."""

    def __init__(self, cin: int, cout: int, modes: int):
        super().__init__()
        self.modes = modes
        scale = 1.0 / (cin * cout)
        self.low = nn.Parameter(scale * torch.rand(cin, cout, modes, modes, 2))  # non-negative first-axis frequencies
        self.high = nn.Parameter(scale * torch.rand(cin, cout, modes, modes, 2))  # negative ones

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        h, w, m = u.shape[-2], u.shape[-1], self.modes
        spec = torch.fft.rfft2(u.float())  # (B, C_in, H, W // 2 + 1) complex64
        out = torch.zeros(u.shape[0], self.low.shape[1], h, w // 2 + 1, dtype=spec.dtype, device=u.device)
        mix = "bixy,ioxy->boxy"
        out[:, :, :m, :m] = torch.einsum(mix, spec[:, :, :m, :m], torch.view_as_complex(self.low))
        out[:, :, -m:, :m] = torch.einsum(mix, spec[:, :, -m:, :m], torch.view_as_complex(self.high))
        return torch.fft.irfft2(out, s=(h, w)).to(u.dtype)


class FNO(nn.Module):
    def __init__(self, cfg: FNOConfig):
        super().__init__()
        cfg.check()
        self.padding = cfg.padding
        self.lift = nn.Conv2d(cfg.in_channels + 2, cfg.width, 1)
        self.spectral = nn.ModuleList([SpectralConv(cfg.width, cfg.width, cfg.modes) for _ in range(cfg.layers)])
        self.pointwise = nn.ModuleList([nn.Conv2d(cfg.width, cfg.width, 1) for _ in range(cfg.layers)])
        self.drop = nn.Dropout2d(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.project = nn.Sequential(
            nn.Conv2d(cfg.width, cfg.projection, 1), nn.GELU(), nn.Conv2d(cfg.projection, cfg.out_channels, 1)
        )
        self.scales = Scales(cfg)

    def _hidden(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, width, H + p, W + p)
        b, _, h, w = x.shape
        gi = torch.linspace(0, 1, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1).expand(b, 1, h, w)
        gj = torch.linspace(0, 1, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w).expand(b, 1, h, w)
        u = self.lift(torch.cat([self.scales.input(x), gi, gj], dim=1))  # (B, width, H, W)
        u = nn.functional.pad(u, (0, self.padding, 0, self.padding))
        for k, (spectral, pointwise) in enumerate(zip(self.spectral, self.pointwise, strict=True)):
            u = spectral(u) + pointwise(u)
            if k < len(self.spectral) - 1:
                u = self.drop(nn.functional.gelu(u))
        return u

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, C_out, H, W)
        h, w = x.shape[-2:]
        return self.scales.output(self.project(self._hidden(x)[..., :h, :w]))

    def embed(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, width * 16)
        h, w = x.shape[-2:]
        return _pooled(self._hidden(x)[..., :h, :w])


@dataclass(frozen=True)
class Arch:
    config: type
    build: Callable[..., nn.Module]


ARCHS: dict[str, Arch] = {
    "edcnn": Arch(EDCNNConfig, EDCNN),
    "unet": Arch(UNetConfig, UNet),
    "fno": Arch(FNOConfig, FNO),
}


def _arch(name: str) -> Arch:
    if name not in ARCHS:
        raise InputError(f"unknown model {name!r} (choose from {', '.join(ARCHS)})")
    return ARCHS[name]


# each preset's model config per architecture, where it differs from the config's defaults (read like a [model]
# table of config.toml, through `config_from_dict`)
MODEL_PRESETS: dict[str, dict[str, dict]] = {
    "paper": {"edcnn": {}, "unet": {"base": 32, "depth": 5}, "fno": {}},
    "small": {
        "edcnn": {"enc_channels": [16, 32, 64, 128], "dec_channels": [64, 32, 16, 8]},
        "unet": {"base": 8, "depth": 3},
        "fno": {},
    },
    "tiny": {
        "edcnn": {"enc_channels": [8, 16, 32], "dec_channels": [16, 8]},
        "unet": {"base": 8, "depth": 2},
        "fno": {"modes": 6, "width": 12, "layers": 2, "projection": 32, "padding": 4},
    },
}


def default_model_config(preset: str, arch: str = "edcnn"):
    """The model config used for a physics preset (paper / small / tiny)."""
    _arch(arch)
    table = MODEL_PRESETS.get(preset, {})
    if arch not in table:
        raise InputError(f"no default {arch} config for preset {preset!r} (choose from {', '.join(MODEL_PRESETS)})")
    return config_from_dict({"arch": arch, **table[arch]})


def fit_to_problem(cfg, problem, params):
    """The model config with the problem's channels and scales (what the network's first and last layers and
    its input and output scaling depend on)."""
    cfg.in_channels, cfg.out_channels = problem.channels
    cfg.x_scale, cfg.y_scale = (float(v) for v in problem.scales(params))
    return cfg


def config_to_dict(cfg) -> dict:
    """Plain data (lists, numbers, strings) for the checkpoint."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}


def config_from_dict(d: dict):
    """Inverse of `config_to_dict`; unknown keys are an InputError (a checkpoint from a newer version)."""
    if not isinstance(d, dict):
        raise InputError(f"model config must be a table, got {type(d).__name__}")
    d = dict(d)
    spec = _arch(str(d.get("arch", "")))
    cfg = build_typed(spec.config, d, f"model config for arch {d['arch']!r}")
    for f in fields(cfg):  # lists from TOML / checkpoints -> the config's tuples
        if isinstance(getattr(cfg, f.name), list):
            setattr(cfg, f.name, tuple(getattr(cfg, f.name)))
    return cfg


def build_model(cfg) -> nn.Module:
    """A network from a config dataclass or its dict form."""
    if isinstance(cfg, dict):
        cfg = config_from_dict(cfg)
    return _arch(cfg.arch).build(cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def enable_mc_dropout(model: nn.Module) -> nn.Module:
    """Eval mode everywhere (BatchNorm uses running stats) except dropout layers, which keep sampling."""
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.Dropout | nn.Dropout2d):
            m.train()
    return model


def model_info(cfg, lattice: int, batch_size: int = 1) -> dict:
    """Parameters, forward FLOPs per sample and a memory estimate, without allocating weights (meta device).

    FLOPs count 2 per multiply-add of the convolutions (the bulk); training is ~3x the forward. Memory: fp32
    weights + grads + two Adam moments (16 B/param) plus the stored activations of one training batch; inference
    keeps only the weights and the largest layer's input + output (no graph under no_grad)."""
    if isinstance(cfg, dict):
        cfg = config_from_dict(cfg)
    cfg.check(lattice)
    with torch.device("meta"):
        model = build_model(cfg)
    flops = 0
    act_elems = 0
    peak_elems = 0

    def hook(mod, inputs, out):
        nonlocal flops, act_elems, peak_elems
        act_elems += out.numel()
        peak_elems = max(peak_elems, out.numel() + inputs[0].numel())
        if isinstance(mod, nn.Conv2d | nn.ConvTranspose2d):
            kh, kw = mod.kernel_size
            spatial = (out if isinstance(mod, nn.Conv2d) else inputs[0]).shape[-2:]
            macs = mod.in_channels * mod.out_channels * kh * kw * spatial[0] * spatial[1] // mod.groups
            flops += 2 * macs

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    with torch.no_grad():
        model(torch.empty(1, cfg.in_channels, lattice, lattice, device="meta"))
    for h in handles:
        h.remove()
    params = count_parameters(model)
    return {
        "arch": cfg.arch,
        "lattice": lattice,
        "parameters": params,
        "flops_per_sample": flops,
        "activation_mb_per_sample": act_elems * 4 / 2**20,
        "weights_mb": params * 4 / 2**20,
        "train_memory_mb": (params * 16 + act_elems * 4 * batch_size) / 2**20,
        "inference_memory_mb": (params * 4 + peak_elems * 4 * batch_size) / 2**20,
        "batch_size": batch_size,
    }
