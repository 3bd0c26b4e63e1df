"""Curation versus random sampling: learning curves, samples ratios at equal size and equal cost, held-out families.

    .venv/bin/python bench/al_study.py --quick                         # same protocol, 2 seeds, 2 rounds: < 10 min
    .venv/bin/python bench/al_study.py --config bench/al_study.toml    # the study (docs/results.json)
    .venv/bin/python bench/al_study.py --quick --extra-test FILE.npz   # also evaluate every final model on FILE

Protocol (docs/study.md; recorded under `protocol` in results.json): every (arm, strategy, seed) is an ordinary
run directory under --out, so the study resumes where it stopped; a run's seed sets its data, network init and
shuffle order; all strategies of a seed share the initial set, the candidate pools and the test sets. Each round
trains from scratch (cosine schedule, best on validation) to at least `min_steps` steps. The mixed test split is
drawn like the pools; the held-out families (ring, grid, crowd, wall-row) are drawn by no pool.

Statistics: per-sample MAE of every test sample, every round, every run. Bootstrap over seeds (paired: a
resample takes the same seeds for every strategy) and over test samples (the same resampled rows for every
run). Samples ratio of a metric = training size at which random reaches the strategy's final value / the
strategy's final size (linear in log-log between random's rounds; a lower bound, flagged, when random never
reaches it); `_fit` from a power law fitted to random's curve. Cost = training + acquisition seconds (solving the
pool, scoring, mining, embedding, picking, solving the picks); the same ratios on that axis.

Runs are spread over `--workers` processes (one Ray each, one torch thread each: on 2 cores two one-thread
trainers do 1.16x the work of one two-thread trainer). results.json is written only when every run is complete.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tomllib

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HARD_SOURCES = 15
HELD_OUT = ["ring", "grid", "crowd", "wall-row"]
MIXED = ["uniform", "clustered", "boundary", "overlap", "sparse-values"]
METRICS = ("mae", "p99", "hard")
SETS = {"mixed": ("mae", "p99", "hard"), "held_out": ("mae", "p99")}

# strategy -> acquisition overrides. `-field`: the score counts the field only (sources_weight 0), the error the
# surrogate can still learn; the ED-CNN's disc pixels carry most of its error and mostly count disc pixels.
VARIANTS: dict[str, dict] = {
    "random": {"strategy": "random"},
    "al": {"strategy": "al", "acquisition": "true-error", "sources_weight": 1.0},  # the ranker as it was
    "al-field": {"strategy": "al", "acquisition": "true-error", "sources_weight": 0.0},
    "ewd": {"strategy": "ewd", "sources_weight": 0.0, "exploration": 0.0},
    "ewd-mine": {"strategy": "ewd", "sources_weight": 0.0, "exploration": 0.0, "mine_parents": 100},
    # ewd with the sharpness the quick protocol chose for power sampling (beta 4: weights score^2, D^2 ~ score^4)
    "ewd-p2-mine": {
        "strategy": "ewd",
        "sources_weight": 0.0,
        "exploration": 0.0,
        "mine_parents": 100,
        "weight_power": 2.0,
    },
    "al-field-mine": {"strategy": "al", "sources_weight": 0.0, "mine_parents": 100},
    "sbal": {"strategy": "sbal", "sources_weight": 0.0},  # beta from the quick protocol
    "lcmd": {"strategy": "lcmd"},
}
PEERS = {"sbal", "lcmd", "coreset"}

# the protocol of the study and of --quick alike (a study config may override it, e.g. for a smoke test)
PROTOCOL = {
    "initial": 100,
    "budget": 100,
    "growth": 2.0,
    "pool": 5000,
    "val": 100,
    "test_per_cell": 50,
    "held_out_per_cell": 13,
    "epochs": 20,
    "min_steps": 300,
    "batch_size": 16,
}
QUICK = {
    "preset": "small",
    "rounds": 2,
    "bootstrap": 300,
    "protocol": PROTOCOL,
    "arms": {
        "edcnn": {
            "model": "edcnn",
            "seeds": [0, 1],
            "strategies": ["random", "ewd-mine", "sbal-b1", "sbal-b2", "sbal-b4"],
            "seeds_by_strategy": {"sbal-b1": [0], "sbal-b2": [0], "sbal-b4": [0]},
        }
    },
    "transfer": None,
    "control": False,
}


def _variant(name: str) -> dict:
    if name.startswith("sbal-b"):
        return {**VARIANTS["sbal"], "beta": float(name.removeprefix("sbal-b"))}
    if name not in VARIANTS:
        raise SystemExit(f"error: unknown strategy {name!r} (choose from {', '.join(VARIANTS)} or sbal-bBETA)")
    return VARIANTS[name]


def run_config(spec: dict, arm: dict, name: str, seed: int, beta: float | None):
    from diffcurate.curate.loop.config import DataConfig, default_config

    p = spec["protocol"]
    cfg = default_config(spec["preset"], arm["model"])
    cfg.model.update(arm.get("model_config", {}))
    cfg.seed, cfg.rounds = seed, spec["rounds"] + (arm.get("extend_random", 0) if name == "random" else 0)
    cfg.warm_start = False
    cfg.min_steps = p["min_steps"]
    cfg.train.update(epochs=p["epochs"], batch_size=p["batch_size"], seed=seed)
    cfg.data = DataConfig(
        initial=p["initial"],
        val=p["val"],
        pool=p["pool"],
        test_per_cell=p["test_per_cell"],
        test_families=list(MIXED),
        held_out_families=list(HELD_OUT),
        held_out_per_cell=p["held_out_per_cell"],
    )
    a = cfg.acquisition
    a.budget, a.budget_growth = p["budget"], p["growth"]
    for k, v in _variant(name).items():
        setattr(a, k, v)
    if name == "sbal" and beta is not None:
        a.beta = beta
    cfg.ray.dashboard = False
    cfg.ray.trainer_threads = 1
    cfg.ray.pipeline = True
    return cfg


def jobs(spec: dict, best: str | None) -> list[tuple[str, str, int]]:
    out = []
    for arm_name, arm in spec["arms"].items():
        fewer = arm.get("seeds_by_strategy", {})
        for seed in arm["seeds"]:
            for s in arm["strategies"]:
                if seed not in fewer.get(s, arm["seeds"]):
                    continue
                s = best if s == "best" else s
                if s is not None:
                    out.append((arm_name, s, seed))
    return out


def run_dir(out: Path, arm: str, name: str, seed: int) -> Path:
    return out / arm / f"{name}-s{seed}"


def complete(root: Path, rounds: int) -> bool:
    """All the rounds of the run's own config (random may run longer than the others: `extend_random`)."""
    from diffcurate.curate.loop.rundir import load_run, read_rounds

    if not (root / "rounds.jsonl").exists():
        return False
    return len(read_rounds(root)) > max(rounds, load_run(root).rounds)


# --- running -------------------------------------------------------------------------------------------------


def do_runs(spec: dict, todo: list[tuple[str, str, int]], out: Path, beta: float | None, log) -> None:
    """Run (or resume) the given runs in this process, on one local Ray."""
    import torch

    from diffcurate.curate.cluster.actors import ray_session
    from diffcurate.curate.loop.rundir import init_run
    from diffcurate.curate.loop.runner import run

    torch.set_num_threads(1)
    todo = [j for j in todo if not complete(run_dir(out, *j), spec["rounds"])]
    if not todo:
        return
    with ray_session(num_cpus=2):
        for arm_name, name, seed in todo:
            root = run_dir(out, arm_name, name, seed)
            init_run(root, run_config(spec, spec["arms"][arm_name], name, seed, beta))
            t0 = time.time()
            run(root, log=lambda s, r=root: log(f"{r.parent.name}/{r.name}: {s}"), show_progress=False)
            log(f"{arm_name}/{name}-s{seed} done in {time.time() - t0:.0f} s")


def shard_main(args, spec, beta) -> None:
    i, n = (int(x) for x in args.shard.split("/"))
    out = args.out

    def log(s):
        print(f"[{i}] {s}", flush=True)

    first = [
        j
        for j in jobs({**spec, "arms": {k: v for k, v in spec["arms"].items() if "best" not in v["strategies"]}}, None)
    ]
    do_runs(spec, first[i::n], out, beta, log)
    later = {k: v for k, v in spec["arms"].items() if "best" in v["strategies"]}
    if later or spec.get("transfer") or spec.get("control"):
        while not all(complete(run_dir(out, *j), spec["rounds"]) for j in first):
            time.sleep(10)  # the other workers' first-arm runs decide `best`
        best = best_strategy(spec, out)
        second = jobs({**spec, "arms": later}, best)
        do_runs(spec, second[i::n], out, beta, log)
        extra_jobs(spec, out, best, i, n, log)


def extra_jobs(spec: dict, out: Path, best: str, i: int, n: int, log) -> None:
    """Transfer (the other model trained on the first arm's final sets) and the training-budget control."""
    work = []
    tr = spec.get("transfer")
    if tr:
        for s in [best if x == "best" else x for x in tr["strategies"]]:
            for seed in transfer_seeds(spec, s):
                work.append(("transfer", s, seed))
    if spec.get("control"):
        work.append(("control", "random", spec["arms"][next(iter(spec["arms"]))]["seeds"][0]))
    for kind, s, seed in work[i::n]:
        path = out / kind / f"{s}-s{seed}.json"
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        res = retrain(spec, out, kind, s, seed)
        res["seconds"] = round(time.time() - t0, 1)
        path.write_text(json.dumps(res))
        log(f"{kind} {s}-s{seed} done in {res['seconds']:.0f} s")


def transfer_seeds(spec: dict, name: str) -> list[int]:
    """The transfer seeds that the first arm ran for `name`."""
    first = spec["arms"][next(iter(spec["arms"]))]
    have = first.get("seeds_by_strategy", {}).get(name, first["seeds"])
    return [s for s in spec["transfer"]["seeds"] if s in have]


def retrain(spec: dict, out: Path, kind: str, name: str, seed: int) -> dict:
    """Train a fresh model on the final training set of a first-arm run and test it like the runs do.
    transfer: the transfer arm's model; control: the run's own model with twice the epochs."""
    import torch

    from diffcurate.curate.loop.config import default_config
    from diffcurate.curate.loop.rundir import load_run, round_train_config
    from diffcurate.curate.store.lmdbstore import Store
    from diffcurate.model.data import dataset_from_configs
    from diffcurate.model.metrics import evaluate_model
    from diffcurate.model.train import TrainConfig, train

    torch.set_num_threads(1)
    first = next(iter(spec["arms"]))
    src = run_dir(out, first, name, seed)
    cfg = load_run(src)
    with Store(src / "store", readonly=True) as st:
        idx = st.index()
        idx = idx[(idx["split"] != "train") | (idx["round"] <= spec["rounds"])]  # random's set at the others' size
        got = {sp: st.get(idx[idx["split"] == sp]["id"].tolist()) for sp in ("train", "val", "test")}
        ph = st.physics
    n_train = len(got["train"][1])
    if kind == "transfer":
        model = {
            **default_config(spec["preset"], spec["transfer"]["model"]).model,
            **spec["transfer"].get("model_config", {}),
        }
        tc = round_train_config(cfg, 0, n_train)
    else:
        model = cfg.model
        tc = round_train_config(cfg, 0, n_train)
        tc = {**tc, "epochs": 2 * tc["epochs"]}
    res = train(
        model,
        TrainConfig.from_dict(tc),
        dataset_from_configs(ph, *got["train"][:2]),
        dataset_from_configs(ph, *got["val"][:2]),
        physics=ph,
        device="cpu",
    )
    cfg_te, y_te, headers = got["test"]
    test_ids = idx[idx["split"] == "test"]["id"].tolist()
    _, per = evaluate_model(res.model, dataset_from_configs(ph, cfg_te, y_te))
    return {
        "ids": test_ids,
        "sampler": [h["sampler"] for h in headers],
        "per_sample": per.tolist(),
        "n_train": n_train,
        "epochs": tc["epochs"],
        "model": model["arch"],
    }


# --- statistics ------------------------------------------------------------------------------------------------


class Errors:
    """Per-sample test errors of every run, aligned on one order of test ids: e[arm][strategy] is
    (seeds, rounds, n_test) float64; n[arm][strategy] (seeds, rounds) training sizes; cost likewise."""

    def __init__(self, spec: dict, out: Path, best: str | None):
        from diffcurate.curate.loop.rundir import RunPaths, read_rounds

        self.e, self.n, self.cost, self.solves = {}, {}, {}, {}
        self.ids = None
        for arm_name, name, seed in jobs(spec, best):
            root = run_dir(out, arm_name, name, seed)
            rounds = read_rounds(root)
            per = []
            for r in rounds:
                ev = json.loads((RunPaths(root).state(r["round"]) / "eval.json").read_text())
                if self.ids is None:
                    self.ids = sorted(ev["ids"])
                    self.pos = {i: j for j, i in enumerate(self.ids)}
                    self.sampler = np.empty(len(self.ids), object)
                    self.sampler[[self.pos[i] for i in ev["ids"]]] = ev["sampler"]
                row = np.empty(len(self.ids))
                row[[self.pos[i] for i in ev["ids"]]] = ev["per_sample"]
                per.append(row)
            self.e.setdefault(arm_name, {}).setdefault(name, []).append(per)
            self.n.setdefault(arm_name, {}).setdefault(name, []).append([r["train_size"] for r in rounds])
            self.cost.setdefault(arm_name, {}).setdefault(name, []).append(np.cumsum([_cost(r) for r in rounds]))
            self.solves.setdefault(arm_name, {}).setdefault(name, []).append(np.cumsum([r["solves"] for r in rounds]))
        with _store_of(spec, out, best) as st:
            idx = st.index().set_index("id")
            self.n_sources = idx.loc[self.ids, "n_sources"].to_numpy()
        for d in (self.e, self.n, self.cost, self.solves):
            for arm in d:
                for s in d[arm]:
                    d[arm][s] = np.array(d[arm][s], np.float64)
        self.masks = {"mixed": np.isin(self.sampler, MIXED), "held_out": np.isin(self.sampler, HELD_OUT)}
        self.hard = self.masks["mixed"] & ((self.n_sources >= HARD_SOURCES) | (self.sampler == "clustered"))

    def align(self, res: dict) -> np.ndarray:
        row = np.empty(len(self.ids))
        row[[self.pos[i] for i in res["ids"]]] = res["per_sample"]
        return row


def _store_of(spec, out, best):
    from diffcurate.curate.store.lmdbstore import Store

    arm, name, seed = jobs(spec, best)[0]
    return Store(run_dir(out, arm, name, seed) / "store", readonly=True)


def _cost(r: dict) -> float:
    """Seconds of a round that a strategy pays: training and acquisition (round 0's solve is mostly the shared
    test sets, so it is left out; every other step counts, pipelined ones included)."""
    s = r["seconds"]
    steps = ("generate", "solve", "score", "mine", "embed", "select", "add") if r["round"] > 0 else ()
    return float(s.get("train", 0.0) + sum(s.get(k, 0.0) for k in steps))


def metric_values(e: np.ndarray, mask: np.ndarray, hard: np.ndarray) -> dict[str, np.ndarray]:
    """e (..., n_test) -> {metric: (...)} on the rows of `mask` (hard: the rows of `hard`)."""
    out = {"mae": e[..., mask].mean(-1), "p99": np.quantile(e[..., mask], 0.99, axis=-1)}
    if hard.any():
        out["hard"] = e[..., hard].mean(-1)
    return out


def reach(n: np.ndarray, v: np.ndarray, target: float) -> float | None:
    """Smallest size at which the curve v(n) falls to target (linear in log-log between points); None if never."""
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
    """The curve's value at a training size (linear in log-log between rounds; the schedules share sizes, so
    this is random's own round at the strategy's final size)."""
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
    per = metric_values(e, mask, hard)  # {metric: (seeds, rounds)}
    return {m: v.mean(0) for m, v in per.items()}


def summarise_arm(E: Errors, arm: str, spec: dict, rng) -> dict:
    """Every strategy of an arm against random, on the mixed split and the held-out families. A strategy run
    with fewer seeds than random is compared with random on the same seeds (seed lists are prefixes)."""
    reps = int(spec.get("bootstrap", 1000))
    strategies = E.e[arm]
    n_test = len(E.ids)
    out = {}
    for name in strategies:
        out[name] = {"peer": name.split("-b")[0] in PEERS, "seeds": int(len(strategies[name]))}
    counts = sorted({len(e) for e in strategies.values()})
    for set_name, metrics in SETS.items():
        mask = E.masks[set_name]
        k_of = {s: len(e) for s, e in strategies.items()}
        point = {s: seed_mean(e, mask, E.hard) for s, e in strategies.items()}
        base_point = {k: seed_mean(strategies["random"][:k], mask, E.hard) for k in counts}
        cut = spec["rounds"] + 1  # a strategy's curve up to the common final size (random may run longer)
        n_of = {s: E.n[arm][s].mean(0)[:cut] for s in strategies}
        base_n = {k: E.n[arm]["random"][:k].mean(0) for k in counts}
        cost_of = {s: E.cost[arm][s].mean(0)[:cut] for s in strategies}
        base_cost = {k: E.cost[arm]["random"][:k].mean(0) for k in counts}
        boot = {s: {m: {"final": [], "ratio": [], "fit": []} for m in metrics} for s in strategies}
        for _ in range(reps):
            rows = rng.integers(n_test, size=n_test)  # the same resampled test rows for every run
            picks = {k: rng.integers(k, size=k) for k in counts}  # paired: the same seeds for every strategy
            base = {k: seed_mean(strategies["random"][picks[k]][:, :, rows], mask[rows], E.hard[rows]) for k in counts}
            for s, e in strategies.items():
                k = k_of[s]
                vals = {
                    m: v[:cut] for m, v in seed_mean(e[picks[k]][:, :cut][:, :, rows], mask[rows], E.hard[rows]).items()
                }
                for m in metrics:
                    vb, vs = base[k][m], vals[m]
                    boot[s][m]["final"].append(vs[-1] / at_size(base_n[k], vb, n_of[s][-1]))
                    r, _, f = ratios(base_n[k], vb, n_of[s], vs)
                    boot[s][m]["ratio"].append(r)
                    boot[s][m]["fit"].append(np.inf if f is None else f)
        for s in strategies:
            k = k_of[s]
            block = {
                "samples_ratio": {},
                "samples_ratio_lower_bound": {},
                "samples_ratio_fit": {},
                "samples_ratio_fit_ci90": {},
                "samples_ratio_ci90": {},
                "final_vs_random": {},
                "final_vs_random_ci90": {},
                "cost_ratio": {},
                "cost_ratio_lower_bound": {},
                "final_mean": {},
                "random_final_mean": {},
                "curve": {},
            }
            for m in metrics:
                vb, vs = base_point[k][m], point[s][m][:cut]
                r, lower, fit = ratios(base_n[k], vb, n_of[s], vs)
                block["samples_ratio"][m] = r
                block["samples_ratio_lower_bound"][m] = lower
                block["samples_ratio_fit"][m] = fit
                block["samples_ratio_fit_ci90"][m] = _ci(boot[s][m]["fit"])
                block["samples_ratio_ci90"][m] = _ci(boot[s][m]["ratio"])
                block["final_vs_random"][m] = float(vs[-1] / at_size(base_n[k], vb, n_of[s][-1]))  # equal size
                block["final_vs_random_ci90"][m] = _ci(boot[s][m]["final"])
                cr, clow, _ = ratios(base_cost[k], vb, cost_of[s], vs)
                block["cost_ratio"][m] = cr
                block["cost_ratio_lower_bound"][m] = clow
                block["final_mean"][m] = float(vs[-1])
                block["random_final_mean"][m] = at_size(base_n[k], vb, n_of[s][-1])  # same seeds, same size
                block["curve"][m] = [float(x) for x in vs]
            block["curve"]["n"] = [float(x) for x in n_of[s]]
            block["curve"]["cost_s"] = [float(x) for x in cost_of[s]]
            block["curve"]["solves"] = [float(x) for x in E.solves[arm][s].mean(0)[:cut]]
            if len(E.n[arm][s][0]) > cut:  # random's longer curve, for the figures
                block["curve_extended"] = {
                    "n": [float(x) for x in E.n[arm][s].mean(0)],
                    **{m: [float(x) for x in point[s][m]] for m in metrics},
                }
            if set_name == "mixed":
                out[s].update(block)
            else:
                out[s]["held_out"] = block
    return out


def _ci(x) -> dict:
    q = np.quantile(np.asarray(x, np.float64), [0.05, 0.5, 0.95])
    fin = lambda v: float(v) if np.isfinite(v) else None  # noqa: E731
    return {"lo": fin(q[0]), "median": fin(q[1]), "hi": fin(q[2])}


def best_strategy(spec: dict, out: Path) -> str:
    """The first arm's best non-peer strategy: lowest held-out p99 of the seed-mean final models (then mixed p99)."""
    first = next(iter(spec["arms"]))
    sub = {**spec, "arms": {first: spec["arms"][first]}}
    E = Errors(sub, out, None)
    scores = {}
    for s, e in E.e[first].items():
        if s == "random" or s.split("-b")[0] in PEERS:
            continue
        last = e[:, -1:]  # (seeds, 1, n): the final models
        scores[s] = (
            float(seed_mean(last, E.masks["held_out"], E.hard)["p99"][0]),
            float(seed_mean(last, E.masks["mixed"], E.hard)["p99"][0]),
        )
    return min(scores, key=scores.get)


def transfer_table(spec: dict, out: Path, E: Errors, best: str) -> dict | None:
    """The transfer model on each strategy's final sets, against random's sets of the same seeds and size."""
    tr = spec.get("transfer")
    if not tr:
        return None

    def load(s: str, seeds: list[int]) -> dict:
        per = np.array([E.align(json.loads((out / "transfer" / f"{s}-s{seed}.json").read_text())) for seed in seeds])[
            :, None
        ]  # (seeds, 1, n)
        return {
            k: {m: float(v[0]) for m, v in seed_mean(per, E.masks[k], E.hard).items() if m in SETS[k]} for k in SETS
        }

    rows = {}
    for s in [best if x == "best" else x for x in tr["strategies"]]:
        seeds = transfer_seeds(spec, s)
        r, base = load(s, seeds), load("random", seeds)
        rows[s] = {**r, "seeds": seeds, "vs_random": {k: {m: r[k][m] / base[k][m] for m in SETS[k]} for k in SETS}}
    return {"from": next(iter(spec["arms"])), "model": tr["model"], "strategies": rows}


def control_block(spec: dict, out: Path, E: Errors) -> dict | None:
    if not spec.get("control"):
        return None
    first = next(iter(spec["arms"]))
    seed = spec["arms"][first]["seeds"][0]
    res = json.loads((out / "control" / f"random-s{seed}.json").read_text())
    twice = E.align(res)
    once = E.e[first]["random"][spec["arms"][first]["seeds"].index(seed), spec["rounds"]]
    return {
        "seed": seed,
        "n_train": res["n_train"],
        "epochs_twice": res["epochs"],
        **{
            f"{k}_{m}_ratio_twice_over_once": float(
                metric_values(twice, E.masks[k], E.hard)[m] / metric_values(once, E.masks[k], E.hard)[m]
            )
            for k in SETS
            for m in ("mae", "p99")
        },
    }


def extra_test(spec: dict, out: Path, best: str | None, path: Path) -> dict:
    """Every final model (every arm, strategy, seed) on an outside file: the evaluate schema, seed means."""
    import torch

    from diffcurate.curate.store.dataset import load_file_dataset
    from diffcurate.model.checkpoint import load_checkpoint
    from diffcurate.model.metrics import evaluate_model

    torch.set_num_threads(2)
    ds, physics = load_file_dataset(path)
    res: dict = {"file": str(path), "n_samples": len(ds), "strategies": {}}
    for arm_name, name, seed in jobs(spec, best):
        root = run_dir(out, arm_name, name, seed)
        ckpt = root / "checkpoints" / f"round-{spec['rounds']:03d}.pt"
        net, meta = load_checkpoint(ckpt, physics=physics)
        m, _ = evaluate_model(net, ds, "cpu", (meta.get("train_config") or {}).get("transform", "none"))
        res["strategies"].setdefault(arm_name, {}).setdefault(name, []).append({"seed": seed, **m})
    return res


def summarise(spec, out: Path, docs: Path, seconds: float, command: str, extra: Path | None) -> dict:
    rng = np.random.default_rng(0)
    best = best_strategy(spec, out) if any("best" in a["strategies"] for a in spec["arms"].values()) else None
    E = Errors(spec, out, best)
    arms = {a: summarise_arm(E, a, spec, rng) for a in spec["arms"]}
    first = next(iter(arms))
    p = spec["protocol"]
    final = p["initial"] + sum(round(p["budget"] * p["growth"] ** i) for i in range(spec["rounds"]))
    sbal_beta = spec.get("sbal_beta")
    results = {
        "protocol": {
            "preset": spec["preset"],
            "test_size": int(E.masks["mixed"].sum()),
            "held_out_size": int(E.masks["held_out"].sum()),
            "held_out_families": HELD_OUT,
            "seeds": {a: v["seeds"] for a, v in spec["arms"].items()},
            "initial": p["initial"],
            "schedule": [p["initial"]]
            + [
                p["initial"] + sum(round(p["budget"] * p["growth"] ** i) for i in range(r))
                for r in range(1, spec["rounds"] + 1)
            ],
            "random_extended_rounds": spec["arms"][first].get("extend_random", 0),
            "pool_size": p["pool"],
            "picked_share": (final - p["initial"]) / final,
            "training": {
                "mode": "scratch",
                "epochs_min": p["epochs"],
                "min_steps": p["min_steps"],
                "batch_size": p["batch_size"],
                "schedule": "constant then cosine, best on validation",
                "val_size": p["val"],
                "control": control_block(spec, out, E),
            },
            "bootstrap": {
                "reps": int(spec.get("bootstrap", 1000)),
                "over": ["seeds", "test samples"],
                "paired": True,
                "interval": 0.9,
            },
            "sbal_beta": sbal_beta,
            "best": best,
        },
        "baseline": "random",
        "strategies": arms[first],
        "arms": arms if len(arms) > 1 else None,
        "transfer": transfer_table(spec, out, E, best) if best else None,
        "command": command,
        "seconds": round(seconds, 1),
    }
    results["budget_by_sources"] = budget_by_sources(spec, out, best)
    if extra is not None:
        results["extra_test"] = extra_test(spec, out, best, extra)
    docs.mkdir(parents=True, exist_ok=True)
    tmp = docs / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(tmp, docs / "results.json")
    print_tables(results)
    plot(results, docs)
    print(f"wrote {docs / 'results.json'} and figures in {docs}/")
    return results


def budget_by_sources(spec: dict, out: Path, best: str | None) -> dict:
    """{strategy: {source count: picks, seed mean}} of the first arm's acquisition rounds (at the common size)."""
    from diffcurate.curate.loop.rundir import read_rounds

    first = next(iter(spec["arms"]))
    acc: dict = {}
    for arm_name, name, seed in jobs(spec, best):
        if arm_name != first:
            continue
        per = acc.setdefault(name, [])
        total: dict[str, int] = {}
        for r in read_rounds(run_dir(out, arm_name, name, seed))[1 : spec["rounds"] + 1]:
            for c, v in r["added_by_sources"].items():
                total[c] = total.get(c, 0) + v
        per.append(total)
    keys = {c for runs in acc.values() for t in runs for c in t}
    return {
        s: {c: float(np.mean([t.get(c, 0) for t in runs])) for c in sorted(keys, key=int)} for s, runs in acc.items()
    }


def print_tables(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    for arm, strategies in (res["arms"] or {"edcnn": res["strategies"]}).items():
        for set_name in SETS:
            t = Table(
                "strategy",
                "seeds",
                *[f"{m} final" for m in SETS[set_name]],
                *[f"{m} vs random [90 %]" for m in SETS[set_name]],
                *[f"{m} samples ratio (fit) [90 %]" for m in SETS[set_name]],
                "p99 cost ratio",
                title=f"{arm}: {set_name} test set, final round, seed means",
            )
            for s, b in strategies.items():
                b = b if set_name == "mixed" else b["held_out"]
                lb = lambda m, b=b: ">=" if b["samples_ratio_lower_bound"][m] else ""  # noqa: E731
                ci = lambda d: f"[{_f(d['lo'])}, {_f(d['hi'])}]"  # noqa: E731
                t.add_row(
                    s,
                    str(strategies[s]["seeds"]),
                    *[f"{b['final_mean'][m]:.4g}" for m in SETS[set_name]],
                    *[f"{b['final_vs_random'][m]:.3f} {ci(b['final_vs_random_ci90'][m])}" for m in SETS[set_name]],
                    *[
                        f"{lb(m)}{b['samples_ratio'][m]:.2f} ({_f(b['samples_ratio_fit'][m])}) "
                        f"{ci(b['samples_ratio_fit_ci90'][m])}"
                        for m in SETS[set_name]
                    ],
                    f"{'>=' if b['cost_ratio_lower_bound']['p99'] else ''}{b['cost_ratio']['p99']:.2f}",
                )
            console.print(t)


def markdown(res: dict) -> str:
    """The study's tables as markdown (docs/study.md, the README): per arm and test set, plus transfer."""
    out = []
    arms = res["arms"] or {"edcnn": res["strategies"]}
    for arm, strategies in arms.items():
        for set_name in SETS:
            ms = SETS[set_name]
            out += [
                f"**{arm}, {'held-out families' if set_name == 'held_out' else 'mixed test split'}** "
                f"(final round, seed means; vs random at equal size with 90 % interval; samples ratio = random's "
                "size to match / the strategy's; `>=`: random never matches within its schedule):",
                "",
                "| strategy | seeds | "
                + " | ".join(f"{m} final" for m in ms)
                + " | "
                + " | ".join(f"{m} vs random" for m in ms)
                + " | p99 samples ratio | p99 fit [90 %] | "
                "p99 cost ratio |",
                "|---|---|" + "---|" * (2 * len(ms) + 3),
            ]
            for s, b0 in strategies.items():
                b = b0 if set_name == "mixed" else b0["held_out"]
                ci = b["final_vs_random_ci90"]
                fit = b["samples_ratio_fit_ci90"]["p99"]
                lb = ">=" if b["samples_ratio_lower_bound"]["p99"] else ""
                clb = ">=" if b["cost_ratio_lower_bound"]["p99"] else ""
                name = f"{s} (peer)" if b0["peer"] else s
                out.append(
                    f"| {name} | {b0['seeds']} | "
                    + " | ".join(f"{b['final_mean'][m]:.4g}" for m in ms)
                    + " | "
                    + " | ".join(f"{b['final_vs_random'][m]:.3f} [{_f(ci[m]['lo'])}, {_f(ci[m]['hi'])}]" for m in ms)
                    + f" | {lb}{b['samples_ratio']['p99']:.2f} | {_f(b['samples_ratio_fit']['p99'])} "
                    f"[{_f(fit['lo'])}, {_f(fit['hi'])}] | {clb}{b['cost_ratio']['p99']:.2f} |"
                )
            out.append("")
    tr = res.get("transfer")
    if tr:
        out += [
            f"**Transfer**: the {tr['model']} trained from scratch on the {tr['from']} arm's final sets, against the "
            "same model on random's sets of the same seeds and size:",
            "",
            "| set curated by | seeds | mixed MAE | mixed p99 | held-out MAE | held-out p99 | mixed p99 vs random | "
            "held-out p99 vs random |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for s, r in tr["strategies"].items():
            out.append(
                f"| {s} | {len(r['seeds'])} | {r['mixed']['mae']:.4g} | {r['mixed']['p99']:.4g} | "
                f"{r['held_out']['mae']:.4g} | {r['held_out']['p99']:.4g} | {r['vs_random']['mixed']['p99']:.3f} "
                f"| {r['vs_random']['held_out']['p99']:.3f} |"
            )
    return "\n".join(out)


def _f(x) -> str:
    return "inf" if x is None else f"{x:.2f}"


def plot(res: dict, docs: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    strategies = res["strategies"]
    fig, ax = plt.subplots(2, 3, figsize=(13, 7.5))
    panels = [
        ("mixed", "mae", "mixed test: MAE"),
        ("mixed", "p99", "mixed test: p99 per-sample MAE"),
        ("mixed", "hard", "mixed test: >= 15 sources or clustered"),
        ("held_out", "mae", "held-out families: MAE"),
        ("held_out", "p99", "held-out families: p99"),
        ("held_out", "p99", "held-out p99 against cost (s)"),
    ]
    for a, (set_name, m, title) in zip(ax.ravel(), panels, strict=True):
        for s, b in strategies.items():
            b = b if set_name == "mixed" else b["held_out"]
            curve = b["curve"] if "cost" in title else b.get("curve_extended", b["curve"])
            x = curve["cost_s"] if "cost" in title else curve["n"]
            a.plot(x, curve[m], marker="o", ls="--" if strategies[s]["peer"] else "-", label=s)
        a.set(xscale="log", yscale="log", title=title, xlabel="cost (s)" if "cost" in title else "training-set size")
    ax[0][0].set_ylabel("per-sample MAE")
    ax[1][0].set_ylabel("per-sample MAE")
    fig.legend(*ax[0][0].get_legend_handles_labels(), loc="lower center", ncol=len(strategies), frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(docs / "learning_curves.png", dpi=110)
    plt.close(fig)
    budget = res.get("budget_by_sources")
    if budget:
        names = list(budget)
        cols = min(4, len(names))
        rows = -(-len(names) // cols)
        fig, ax = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows), sharex=True, sharey=True, squeeze=False)
        for a, s in zip(ax.ravel(), names, strict=False):
            counts = sorted(budget[s], key=int)
            a.bar([int(c) for c in counts], [budget[s][c] for c in counts], color="tab:blue")
            a.set_title(s, fontsize=10)
            a.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        for a in ax.ravel()[len(names) :]:
            a.axis("off")
        for a in ax[-1]:
            a.set_xlabel("number of sources")
        for a in ax[:, 0]:
            a.set_ylabel("samples picked (seed mean)")
        fig.suptitle("Where each strategy spent its picks (first arm, all rounds)")
        fig.tight_layout()
        fig.savefig(docs / "budget_by_sources.png", dpi=110)
        plt.close(fig)


# --- entry point -----------------------------------------------------------------------------------------------


def load_spec(args) -> dict:
    spec = json.loads(json.dumps(QUICK))
    if args.config:
        spec.update(tomllib.loads(args.config.read_text()))
    if not args.quick and not args.config:
        raise SystemExit("error: give --quick or --config FILE")
    for arm in spec["arms"].values():
        for s in arm["strategies"]:
            if s != "best":
                _variant(s)
    if any(s == "sbal" for a in spec["arms"].values() for s in a["strategies"]):
        quick = Path(spec.get("sbal_beta_from", "docs/quick/results.json"))
        if "sbal_beta" not in spec:
            if not quick.is_file():
                raise SystemExit(f"error: sbal's beta comes from the quick protocol: run --quick first ({quick})")
            q = json.loads(quick.read_text())["strategies"]
            betas = {s: q[s]["held_out"]["final_mean"]["p99"] for s in q if s.startswith("sbal-b")}
            spec["sbal_beta"] = float(min(betas, key=betas.get).removeprefix("sbal-b"))
    return spec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, help="TOML: preset, rounds, [protocol], [arms.NAME], [transfer]")
    ap.add_argument("--quick", action="store_true", help="the same protocol with 2 seeds and 2 rounds")
    ap.add_argument("--out", type=Path, help="run directories (default runs/study/full or runs/study/quick)")
    ap.add_argument("--docs", type=Path, help="results.json and figures (default docs/, or docs/quick/ with --quick)")
    ap.add_argument("--workers", type=int, default=2, help="processes running runs side by side")
    ap.add_argument("--extra-test", type=Path, help="an npz/HDF5 file with y: every final model is evaluated on it")
    ap.add_argument("--shard", help=argparse.SUPPRESS)
    ap.add_argument("--markdown", type=Path, help="print the tables of an existing results.json as markdown, and exit")
    args = ap.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return
    spec = load_spec(args)
    args.out = args.out or Path("runs/study") / ("quick" if args.quick else "full")
    args.docs = args.docs or Path("docs/quick" if args.quick else "docs")
    if args.extra_test is not None:  # checked before hours of runs, with the one loader every command uses
        from diffcurate.curate.store.dataset import load_file_dataset
        from diffcurate.solvers.errors import InputError

        try:
            load_file_dataset(args.extra_test)
        except InputError as e:
            raise SystemExit(f"error: {e}") from None
    if args.shard:
        shard_main(args, spec, spec.get("sbal_beta"))
        return
    t0 = time.time()
    base = [sys.executable, __file__, "--out", str(args.out)] + (["--quick"] if args.quick else [])
    base += ["--config", str(args.config)] if args.config else []
    procs = [subprocess.Popen([*base, "--shard", f"{i}/{args.workers}"]) for i in range(args.workers)]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"error: a worker failed (exit codes {codes}); re-run the same command to resume")
    summarise(
        spec, args.out, args.docs, time.time() - t0, " ".join(["bench/al_study.py", *sys.argv[1:]]), args.extra_test
    )


if __name__ == "__main__":
    main()
