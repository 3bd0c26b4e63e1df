"""Samplers: seeded by (seed, sampler, index) only, and each family has the property it is named for."""

import numpy as np
import pytest

from diffcurate.solvers.problem import PRESETS, ProblemError, disc_index
from diffcurate.solvers.sampling import sample_configs, sampler_names

SMALL = PRESETS["small"].physics


def _rows(cfg):
    return [(cfg.sample(s)[0].tolist(), cfg.sample(s)[1].tolist()) for s in range(len(cfg))]


@pytest.mark.parametrize("name", sampler_names())
def test_index_ranges_give_the_same_configurations(name):
    whole, fam = sample_configs(name, SMALL, 42, range(40), (1, 20))
    a, fa = sample_configs(name, SMALL, 42, range(0, 17), (1, 20))
    b, fb = sample_configs(name, SMALL, 42, range(17, 40), (1, 20))
    assert _rows(whole) == _rows(a) + _rows(b) and fam == fa + fb
    other, _ = sample_configs(name, SMALL, 43, range(40), (1, 20))
    assert _rows(other) != _rows(whole)
    whole.validate(SMALL)
    assert whole.counts.min() >= 1 and whole.counts.max() <= 20


@pytest.mark.parametrize("name", ["uniform", "clustered", "boundary", "overlap"])
def test_one_value_is_exactly_one_the_rest_in_0_1(name):
    cfg, _ = sample_configs(name, SMALL, 1, range(100), (1, 20))
    for s in range(len(cfg)):
        v = cfg.sample(s)[1]
        assert (v == 1.0).sum() >= 1 and (v > 0).all() and (v <= 1).all()


def test_family_properties():
    R, L, lD = SMALL.radius, SMALL.lattice, SMALL.diffusion_length
    cl, _ = sample_configs("clustered", SMALL, 2, range(100), (2, 20))
    for s in range(len(cl)):
        c = cl.sample(s)[0]
        assert (c.max(0) - c.min(0)).max() <= 2 * round(1.5 * lD)
    bd, _ = sample_configs("boundary", SMALL, 2, range(100), (1, 20))
    for s in range(len(bd)):
        c = bd.sample(s)[0]
        assert ((c == R) | (c == L - 1 - R)).any(1).all()  # every disc touches a wall
    ov, _ = sample_configs("overlap", SMALL, 2, range(100), (2, 20))
    for s in range(len(ov)):
        c = ov.sample(s)[0]
        cover = disc_index(SMALL, ov, s)[0]  # flat pixel of every (disc, pixel) pair
        pix, times = np.unique(cover, return_counts=True)
        shared = np.isin(cover.reshape(len(c), -1), pix[times > 1])
        assert shared.any(1).all()  # every disc shares a pixel with another
    sp, _ = sample_configs("sparse-values", SMALL, 2, range(100), (2, 20))
    for s in range(len(sp)):
        v = np.sort(sp.sample(s)[1])
        assert v[-1] == 1.0 and (v[:-1] <= 0.05).all()


def test_mixed_uses_every_family_with_roughly_its_weight():
    _, fam = sample_configs("mixed", SMALL, 0, range(2000), (1, 20))
    share = {n: fam.count(n) / len(fam) for n in set(fam)}
    assert set(share) == {"uniform", "clustered", "boundary", "overlap", "sparse-values"}
    assert 0.45 < share["uniform"] < 0.55 and all(0.09 < share[n] < 0.16 for n in share if n != "uniform")


def test_unknown_sampler_and_bad_range():
    with pytest.raises(ProblemError, match="unknown sampler"):
        sample_configs("nope", SMALL, 0, range(3))
    with pytest.raises(ProblemError, match="source range"):
        sample_configs("uniform", SMALL, 0, range(3), (3, 2))
