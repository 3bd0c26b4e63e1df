"""Statistics of the study, from the records alone.

Per-sample MAE of every test sample, every round, every run, aligned on the one test set. Bootstrap over seeds
(paired: a resample takes the same seeds for every strategy) and over test samples (the same resampled rows for
every run). Samples ratio of a metric = training size at which the baseline reaches the strategy's final value /
the strategy's final size (linear in log-log between the baseline's rounds; a lower bound, flagged, when it never
does); `_fit` from a power law fitted to the baseline's curve. Cost = the seconds a run paid for training and
acquisition (records.COST_STEPS); `cost_ratio` = seconds random needs to match / the strategy's seconds, and
`final_vs_random_equal_cost` = the strategy's final value / random's at the strategy's seconds.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

from bench.study import records
from bench.study.protocol import (
    SETS,
    families,
    first_arm,
    hard_rows,
    is_baseline,
    jobs,
    peer,
    pool_of,
    stratified_of,
)


class Errors:
    """Per-sample test errors of every run: e[arm][strategy] is (seeds, rounds, n_test) float64; n, cost, solves
    [arm][strategy] (seeds, rounds); seeds[arm][strategy] the seeds in order."""

    def __init__(self, spec: dict, recs: Path, best: str | None):
        test = json.loads((recs / "test_set.json").read_text())
        self.ids = test["ids"]
        self.sampler = np.array(test["sampler"], object)
        self.strata = np.array(test["stratum"] if "stratum" in test else test["n_sources"])
        self.e, self.n, self.cost, self.solves, self.seeds, self.meta = {}, {}, {}, {}, {}, {}
        for arm, name, seed in jobs(spec, best):
            meta, arr = records.load(recs, arm, name, seed)
            rounds = meta["rounds"]
            for d, v in (
                (self.e, arr["per_sample"].astype(np.float64)),
                (self.n, [r["train_size"] for r in rounds]),
                (self.cost, np.cumsum([r["cost_s"] for r in rounds])),
                (self.solves, np.cumsum([r["solves"] for r in rounds])),
                (self.seeds, seed),
                (self.meta, meta),
            ):
                d.setdefault(arm, {}).setdefault(name, []).append(v)
        for d in (self.e, self.n, self.cost, self.solves):
            for arm in d:
                for s in d[arm]:
                    d[arm][s] = np.array(d[arm][s], np.float64)
        mixed, held_out = families(spec)
        self.masks = {"mixed": np.isin(self.sampler, mixed), "held_out": np.isin(self.sampler, held_out)}
        self.hard = self.masks["mixed"] & hard_rows(spec, self.sampler, self.strata)


def metric_values(e: np.ndarray, mask: np.ndarray, hard: np.ndarray) -> dict[str, np.ndarray]:
    """e (..., n_test) -> {metric: (...)} on the rows of `mask` (hard: the rows of `hard`)."""
    out = {"mae": e[..., mask].mean(-1), "p99": np.quantile(e[..., mask], 0.99, axis=-1)}
    if hard.any():
        out["hard"] = e[..., hard].mean(-1)
    return out


def reach(n: np.ndarray, v: np.ndarray, target: float) -> float | None:
    """Smallest x at which the curve v(x) falls to target (linear in log-log between points); None if never."""
    if v[0] <= target:
        return float(n[0])
    for i in range(1, len(n)):
        if v[i] <= target:
            t = (np.log(v[i - 1]) - np.log(target)) / (np.log(v[i - 1]) - np.log(v[i]))
            return float(np.exp(np.log(n[i - 1]) + t * (np.log(n[i]) - np.log(n[i - 1]))))
    return None


def power_fit(n: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    """(c, b) of v = c n^b, least squares in log-log."""
    b, logc = np.polyfit(np.log(n), np.log(v), 1)
    return float(np.exp(logc)), float(b)


def at_size(n: np.ndarray, v: np.ndarray, size: float) -> float:
    """The curve's value at x = size (linear in log-log between points, constant beyond the ends)."""
    return float(np.exp(np.interp(np.log(size), np.log(n), np.log(v))))


def ratios(n_base, v_base, n_s, v_s) -> tuple[float, bool, float | None]:
    """(samples ratio, lower bound?, fitted ratio) of a strategy's final value against the baseline's curve."""
    target, final_n = v_s[-1], n_s[-1]
    r = reach(n_base, v_base, target)
    c, b = power_fit(n_base, v_base)
    fit = float((target / c) ** (1 / b) / final_n) if b < 0 else None
    if r is None:
        return float(n_base[-1] / final_n), True, fit
    return float(r / final_n), False, fit


def seed_mean(e: np.ndarray, mask: np.ndarray, hard: np.ndarray) -> dict[str, np.ndarray]:
    """e (seeds, rounds, n) -> {metric: (rounds,)}: each run's metric, then the mean over seeds (a p99 is each
    model's own p99, as a user of one model sees it, not the p99 of seed-averaged errors)."""
    return {m: v.mean(0) for m, v in metric_values(e, mask, hard).items()}


def _ci(x) -> dict:
    q = np.quantile(np.asarray(x, np.float64), [0.05, 0.5, 0.95])
    fin = lambda v: float(v) if np.isfinite(v) else None  # noqa: E731
    return {"lo": fin(q[0]), "median": fin(q[1]), "hi": fin(q[2])}


def _rows_of(E: Errors, arm: str, s: str, base: str) -> np.ndarray:
    """Rows of `base`'s runs on the seeds of strategy s (paired comparisons on common seeds)."""
    pos = {seed: i for i, seed in enumerate(E.seeds[arm][base])}
    return np.array([pos[seed] for seed in E.seeds[arm][s] if seed in pos], np.int64)


def _own_rows(E: Errors, arm: str, s: str, base: str) -> np.ndarray:
    """Rows of strategy s's runs on the seeds `base` also ran, in the order of `_rows_of(E, arm, s, base)`."""
    theirs = set(E.seeds[arm][base])
    return np.array([i for i, seed in enumerate(E.seeds[arm][s]) if seed in theirs], np.int64)


def summarise_arm(E: Errors, arm: str, spec: dict, seed: int = 0) -> dict:
    """Every strategy of an arm against random (curves, samples and cost ratios) and against stratified (at
    equal size), on the mixed split and the held-out families, each on the seeds it shares with the baseline.
    Each block bootstraps from its own stream (`block_rng`), so adding a strategy moves no other row's interval."""
    reps = int(spec.get("bootstrap", 1000))
    strategies = E.e[arm]
    n_test = len(E.ids)
    cut = spec["rounds"] + 1  # a strategy's curve up to the common final size (random may run longer)
    out = {s: {"peer": peer(s), "seeds": len(strategies[s]), "seed_list": list(E.seeds[arm][s])} for s in strategies}
    for set_name, metrics in SETS.items():
        mask = E.masks[set_name]
        blocks = {}
        for s in strategies:
            strat = stratified_of(strategies, s)
            rows = {"random": _rows_of(E, arm, s, "random")}
            if strat:
                rows["stratified"] = _rows_of(E, arm, s, strat)
            own = _own_rows(E, arm, s, "random")
            rng = block_rng(seed, arm, s, set_name)
            blocks[s] = _block(E, arm, s, own, rows, mask, metrics, cut, reps, n_test, rng, strat)
            if strat:
                out[s]["stratified_baseline"] = strat
        for s, block in blocks.items():
            if set_name == "mixed":
                out[s].update(block)
            else:
                out[s]["held_out"] = block
    for s in spec["arms"][arm].get("ablation", []):
        base = pool_of(s)[0]
        if s in strategies and base in strategies:
            out[s]["vs_base"] = base
            for set_name, metrics in SETS.items():
                block = out[s] if set_name == "mixed" else out[s]["held_out"]
                rng = block_rng(seed, arm, s, set_name, "vs_base")
                block.update(vs_base(E, arm, s, base, E.masks[set_name], metrics, cut, reps, n_test, rng))
    return out


def block_rng(seed: int, *names: str) -> np.random.Generator:
    """The bootstrap's random stream of one block of results, from the study's seed and the block's names."""
    return np.random.default_rng([seed, zlib.crc32("/".join(names).encode())])


def vs_base(E: Errors, arm: str, s: str, base: str, mask, metrics, cut: int, reps: int, n_test: int, rng) -> dict:
    """An ablation against the strategy it varies, final round, on the seeds both ran (paired), with 90 %
    intervals over seeds and test samples: what the one lever does by itself."""
    own, rows = _own_rows(E, arm, s, base), _rows_of(E, arm, s, base)  # (common seeds,) each, paired
    e_s, e_b = E.e[arm][s][own][:, cut - 1], E.e[arm][base][rows][:, cut - 1]  # (seeds, n_test)

    def ratio(a, b, m, hard):
        va, vb = seed_mean(a, m, hard), seed_mean(b, m, hard)
        return {k: float(va[k] / vb[k]) for k in metrics}

    boot = []
    for _ in range(reps):
        t = rng.integers(n_test, size=n_test)  # the same resampled test rows for both
        pick = rng.integers(len(own), size=len(own))  # paired seeds
        boot.append(ratio(e_s[pick][:, t], e_b[pick][:, t], mask[t], E.hard[t]))
    return {
        "final_vs_base": ratio(e_s, e_b, mask, E.hard),
        "final_vs_base_ci90": {k: _ci([b[k] for b in boot]) for k in metrics},
        "base_seed_list": [int(E.seeds[arm][s][i]) for i in own],
    }


def _curves(E, arm, s, rows_s, rows_b, base, mask, hard, cut, test_rows=None):
    """(strategy values, baseline values, sizes, baseline sizes, costs, baseline costs) on matched seeds."""
    e_s, e_b = E.e[arm][s][rows_s][:, :cut], E.e[arm][base][rows_b]
    if test_rows is not None:
        e_s, e_b, mask, hard = e_s[:, :, test_rows], e_b[:, :, test_rows], mask[test_rows], hard[test_rows]
    vs, vb = seed_mean(e_s, mask, hard), seed_mean(e_b, mask, hard)
    n_s, n_b = E.n[arm][s][rows_s].mean(0)[:cut], E.n[arm][base][rows_b].mean(0)
    c_s, c_b = E.cost[arm][s][rows_s].mean(0)[:cut], E.cost[arm][base][rows_b].mean(0)
    return vs, vb, n_s, n_b, c_s, c_b


def _block(E, arm, s, own, rows, mask, metrics, cut, reps, n_test, rng, strat_name: str | None = None) -> dict:
    block = {
        k: {}
        for k in (
            "final_mean",
            "random_final_mean",
            "final_vs_random",
            "final_vs_random_ci90",
            "samples_ratio",
            "samples_ratio_lower_bound",
            "samples_ratio_ci90",
            "samples_ratio_fit",
            "samples_ratio_fit_ci90",
            "cost_ratio",
            "cost_ratio_lower_bound",
            "final_vs_random_equal_cost",
            "final_vs_random_equal_cost_ci90",
            "equal_cost_beyond_random",
            "final_vs_stratified",
            "final_vs_stratified_ci90",
            "curve",
        )
    }
    vs, vb, n_s, n_b, c_s, c_b = _curves(E, arm, s, own, rows["random"], "random", mask, E.hard, cut)
    strat = None
    if strat_name and len(rows["stratified"]):
        s_rows = _own_rows(E, arm, s, strat_name)
        strat = (s_rows, rows["stratified"])
    boot = {m: {k: [] for k in ("final", "ratio", "fit", "cost", "strat")} for m in metrics}
    for _ in range(reps):
        test_rows = rng.integers(n_test, size=n_test)  # the same resampled test rows for every run
        pick = rng.integers(len(own), size=len(own))  # paired: the same seeds for strategy and baseline
        bv, bb, bn_s, bn_b, bc_s, bc_b = _curves(
            E, arm, s, own[pick], rows["random"][pick], "random", mask, E.hard, cut, test_rows
        )
        if strat:
            sp = rng.integers(len(strat[0]), size=len(strat[0]))
            sv, sb, sn_s, sn_b, _, _ = _curves(
                E, arm, s, strat[0][sp], strat[1][sp], strat_name, mask, E.hard, cut, test_rows
            )
        for m in metrics:
            boot[m]["final"].append(bv[m][-1] / at_size(bn_b, bb[m], bn_s[-1]))
            r, _, f = ratios(bn_b, bb[m], bn_s, bv[m])
            boot[m]["ratio"].append(r)
            boot[m]["fit"].append(np.inf if f is None else f)
            boot[m]["cost"].append(bv[m][-1] / at_size(bc_b, bb[m], bc_s[-1]))
            if strat:
                boot[m]["strat"].append(sv[m][-1] / at_size(sn_b, sb[m], sn_s[-1]))
    for m in metrics:
        r, lower, fit = ratios(n_b, vb[m], n_s, vs[m])
        base_at = at_size(n_b, vb[m], n_s[-1])  # random's value at the strategy's final size, same seeds
        block["final_mean"][m] = float(vs[m][-1])
        block["random_final_mean"][m] = base_at
        block["final_vs_random"][m] = float(vs[m][-1] / base_at)
        block["final_vs_random_ci90"][m] = _ci(boot[m]["final"])
        block["samples_ratio"][m] = r
        block["samples_ratio_lower_bound"][m] = lower
        block["samples_ratio_ci90"][m] = _ci(boot[m]["ratio"])
        block["samples_ratio_fit"][m] = fit
        block["samples_ratio_fit_ci90"][m] = _ci(boot[m]["fit"])
        cr, clow, _ = ratios(c_b, vb[m], c_s, vs[m])
        block["cost_ratio"][m] = cr
        block["cost_ratio_lower_bound"][m] = clow
        block["final_vs_random_equal_cost"][m] = float(vs[m][-1] / at_size(c_b, vb[m], c_s[-1]))
        # beyond random's last round its value is held (not extrapolated): the ratio then favours the strategy
        block["equal_cost_beyond_random"][m] = bool(c_s[-1] > c_b[-1])
        block["final_vs_random_equal_cost_ci90"][m] = _ci(boot[m]["cost"])
        if strat:
            sv, sb, sn_s, sn_b, _, _ = _curves(E, arm, s, strat[0], strat[1], strat_name, mask, E.hard, cut)
            block["final_vs_stratified"][m] = float(sv[m][-1] / at_size(sn_b, sb[m], sn_s[-1]))
            block["final_vs_stratified_ci90"][m] = _ci(boot[m]["strat"])
        block["curve"][m] = [float(x) for x in vs[m]]
    block["curve"]["n"] = [float(x) for x in n_s]
    block["curve"]["cost_s"] = [float(x) for x in c_s]
    block["curve"]["solves"] = [float(x) for x in E.solves[arm][s][own].mean(0)[:cut]]
    if E.n[arm][s].shape[1] > cut:  # random's longer curve, for the figures
        full = seed_mean(E.e[arm][s][own], mask, E.hard)
        block["curve_extended"] = {
            "n": [float(x) for x in E.n[arm][s][own].mean(0)],
            "cost_s": [float(x) for x in E.cost[arm][s][own].mean(0)],
            **{m: [float(x) for x in full[m]] for m in metrics},
        }
    if not strat:
        del block["final_vs_stratified"], block["final_vs_stratified_ci90"]
    return block


def best_strategy(spec: dict, recs: Path) -> str:
    """The first arm's best non-peer, non-baseline strategy: lowest held-out p99 of the seed-mean final models
    (then mixed p99). Strategies the arm lists under `ablation` (trials of one lever) are not candidates: the
    later arms and the transfer build on the strategies of the main comparison."""
    first = first_arm(spec)
    E = Errors({**spec, "arms": {first: spec["arms"][first]}}, recs, None)
    ablation = set(spec["arms"][first].get("ablation", []))
    scores = {}
    for s, e in E.e[first].items():
        if is_baseline(s) or peer(s) or s in ablation:
            continue
        last = e[:, spec["rounds"] : spec["rounds"] + 1]  # (seeds, 1, n): the final models
        scores[s] = (
            float(seed_mean(last, E.masks["held_out"], E.hard)["p99"][0]),
            float(seed_mean(last, E.masks["mixed"], E.hard)["p99"][0]),
        )
    return min(scores, key=scores.get)


def _retrained(recs: Path, kind: str, s: str, seed: int) -> np.ndarray:
    return records.load(recs, kind, s, seed)[1]["per_sample"]  # (1, n)


def transfer_table(spec: dict, recs: Path, E: Errors, best: str) -> dict | None:
    """The transfer model on each strategy's final sets, against random's sets of the same seeds and size."""
    tr = spec.get("transfer")
    if not tr:
        return None

    def load(s: str) -> dict:
        per = np.array([_retrained(recs, "transfer", s, seed) for seed in tr["seeds"]], np.float64)
        return {
            k: {m: float(v[0]) for m, v in seed_mean(per, E.masks[k], E.hard).items() if m in SETS[k]} for k in SETS
        }

    rows = {}
    base = load("random")
    for s in [best if x == "best" else x for x in tr["strategies"]]:
        r = load(s)
        rows[s] = {
            **r,
            "seeds": tr["seeds"],
            "vs_random": {k: {m: r[k][m] / base[k][m] for m in SETS[k]} for k in SETS},
        }
    return {"from": first_arm(spec), "model": tr["model"], "strategies": rows}


def control_block(spec: dict, recs: Path, E: Errors, best: str | None) -> dict | None:
    """Twice the maximum training budget at the final size, against the run's own final model:
    {strategy: {seed, mae_ratio, p99_ratio (mixed), held_out_mae_ratio, held_out_p99_ratio}}."""
    names = [best if s == "best" else s for s in spec.get("control") or []]
    if not names:
        return None
    first = first_arm(spec)
    seed = spec["arms"][first]["seeds"][0]
    out = {}
    for s in names:
        twice = _retrained(recs, "control", s, seed)[0].astype(np.float64)
        once = E.e[first][s][E.seeds[first][s].index(seed), spec["rounds"]]
        meta = records.load(recs, "control", s, seed)[0]
        row = {"seed": seed, "n_train": meta["n_train"], "epochs_twice": meta["epochs"]}
        for k, prefix in (("mixed", ""), ("held_out", "held_out_")):
            a, b = metric_values(twice, E.masks[k], E.hard), metric_values(once, E.masks[k], E.hard)
            row.update({f"{prefix}{m}_ratio": float(a[m] / b[m]) for m in ("mae", "p99")})
        out[s] = row
    return out
