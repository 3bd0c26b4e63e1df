"""What can be wrong with a run directory, found before a run meets it late or never: a store that is not the run's
own or holds other physics, a damaged record, a round folder started under another config, a torn round log, a
finished round's missing state, a checkpoint that fails its checksum.

A round's steps each write one file, and a resumed run keeps the files it finds. So a round folder started under
one config and finished under another would mix the two, silently. Each round folder therefore records the config
it was started with (`started.json`: the fields that decide results), and `curate run` refuses, before Ray starts,
to continue one whose config differs, naming the fields and the command that clears it.
"""

from __future__ import annotations

import json
from pathlib import Path

from diffcurate.common.errors import CheckError, InputError, hint
from diffcurate.common.files import atomic_json
from diffcurate.curate.loop.config import RENAMED_STRATEGIES, RunConfig
from diffcurate.curate.loop.rundir import (
    RunPaths,
    initial_requests,
    load_run,
    read_rounds,
    round_folders,
    torn_rounds,
)

# fields that only say how far or where a run goes, not what a round computes
_NOT_RESULTS = ("rounds", "max_solves", "target_p99")
# result fields a round's started record may lack, with the value it started under
_STARTED_DEFAULTS = {
    "problem": "diffusion",
    "model.in_channels": 1,
    "model.out_channels": 1,
    "model.x_scale": 1.0,
    "model.y_scale": 1.0,
}
# result fields a round's started record may name as they were once named
_STARTED_RENAMED = {"min_steps": "round_steps", "sources": "strata"}
_RAY_RESULTS = ("trainers",)  # ensemble members score candidates for some acquisitions


def result_fields(cfg: RunConfig) -> dict:
    """The config's fields that decide what a round computes, flat (`acquisition.budget`: 100)."""
    d = {k: v for k, v in cfg.to_dict().items() if k not in _NOT_RESULTS}
    d["ray"] = {k: v for k, v in d.get("ray", {}).items() if k in _RAY_RESULTS}
    return _flat(d)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def mark_started(root: Path, k: int, cfg: RunConfig) -> None:
    """Record the config round k starts under, once (before its first step writes anything)."""
    path = RunPaths(root).round(k).started
    if not path.exists():
        atomic_json(path, result_fields(cfg))


def stale_rounds(root: Path, cfg: RunConfig) -> list[str]:
    """One line per unfinished round folder that was started under another config than `cfg`."""
    paths, done = RunPaths(root), len(read_rounds(root))
    now = result_fields(cfg)
    out = []
    for k in round_folders(root):
        started = paths.round(k).started
        if k < done or not started.exists():  # finished rounds are history; a folder without a record: unknown
            continue
        try:
            then = json.loads(started.read_text())
        except ValueError:
            then = {}
        then = {**_STARTED_DEFAULTS, **{_STARTED_RENAMED.get(f, f): v for f, v in then.items()}}
        if then.get("acquisition.strategy") in RENAMED_STRATEGIES:
            then["acquisition.strategy"] = RENAMED_STRATEGIES[then["acquisition.strategy"]]
        diff = sorted(f for f in now.keys() | then.keys() if now.get(f) != then.get(f))
        if diff:
            shown = "; ".join(f"{f} {then.get(f)!r} then, {now.get(f)!r} now" for f in diff[:3])
            more = f" and {len(diff) - 3} more" if len(diff) > 3 else ""
            out.append(
                f"{paths.state(k)} was started under another config ({shown}{more}); to redo round {k} under "
                f"this one, delete it: rm -r {paths.state(k)}"
            )
    return out


def check_state(root: Path, cfg: RunConfig) -> None:
    """Refuse (one line, exit 2) to continue a round folder started under another config."""
    stale = stale_rounds(root, cfg)
    if stale:
        raise InputError(stale[0])


def check_checkpoints(root: Path, k: int) -> None:
    """Refuse (exit 1) a run whose next round would load a damaged checkpoint of round k (warm start, scoring,
    ensemble members): found before Ray starts, not by an actor half-way through the round."""
    from diffcurate.model.checkpoint import read_checkpoint

    if k >= 0:
        for f in RunPaths(root).round_checkpoints(k):
            read_checkpoint(f)


def check_records(root: Path) -> None:
    """Refuse (exit 1) a run whose store holds a record that fails its checksum: every round reads the train, val
    and test splits whole, so the damage is found now, with the command that repairs it, not after a round."""
    from diffcurate.curate.store.errors import StoreDamaged
    from diffcurate.curate.store.lmdbstore import Store

    store = RunPaths(root).store
    if not store.exists():
        return
    with Store(store, readonly=True) as st:
        bad = st.damaged_records()
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise StoreDamaged(
            f"{store}: record {bad[0]}: checksum mismatch{more}; re-solve damaged records from their configurations with "
            f"{hint('verify', '--store', store, '--repair')}, then re-run"
        )


def missing_state(root: Path) -> list[str]:
    """One line per finished round (in rounds.jsonl) whose state folder lacks what every round writes."""
    paths, out = RunPaths(root), []
    for r in read_rounds(root):
        files = paths.round(r["round"])
        gone = [f.name for f in (files.meta, files.fit, files.eval) if not f.exists()]
        if gone:
            out.append(f"{files.dir}: round {r['round']} finished, but its state lacks {', '.join(gone)}")
    return out


def checkpoint_problems(root: Path) -> tuple[int, list[str]]:
    """(checkpoints checked, one line per checkpoint that does not load or fails its checksum)."""
    from diffcurate.model.checkpoint import read_checkpoint

    files = sorted(RunPaths(root).checkpoints.glob("*.pt"))
    problems = []
    for f in files:
        try:
            read_checkpoint(f)
        except (InputError, CheckError) as e:
            problems.append(str(e))
    return len(files), problems


def torn_log(root: Path) -> list[str]:
    """The line for a torn rounds.jsonl (empty if whole)."""
    if not torn_rounds(root):
        return []
    return [
        f"{RunPaths(root).rounds} ends in a torn line; the rounds that state/ shows finished are read from there, "
        f"and {hint('run', root)} rewrites the log"
    ]


def log_warnings(root: Path, cfg: RunConfig) -> list[str]:
    """What `report` warns about: a torn round log, a stale round folder, a finished round's missing state (a
    damaged checkpoint it reads, it refuses)."""
    return torn_log(root) + stale_rounds(root, cfg) + missing_state(root)


def run_warnings(root: Path, cfg: RunConfig) -> list[str]:
    """What `status` warns about: `log_warnings`, and a checkpoint that does not load or fails its checksum."""
    return log_warnings(root, cfg) + checkpoint_problems(root)[1]


def verify_run(root: Path, resolve: int = 0, seed: int = 0) -> dict:
    """`curate verify --run RUN_DIR`: the config against the store (physics, the run's own store), the store (every
    record's checksum, K re-solved), every checkpoint's checksum, the round log (a torn line) and the finished
    rounds' state. `problems` is damage (exit 1), `warnings` the rest (a stale round folder)."""
    from diffcurate.curate.store.verify import verify_store

    cfg = load_run(root)
    paths = RunPaths(root)
    try:
        check_run_store(root, cfg, deep=True)
        mismatch = []
    except InputError as e:  # an edited config, another run's store: damage to the run, not bad input
        mismatch = [str(e)]
    r = (
        verify_store(paths.store, resolve, seed)
        if paths.store.exists()
        else {"checked": 0, "resolved": 0, "max_error": 0.0, "problems": []}
    )
    n, bad = checkpoint_problems(root)
    damage = mismatch + r["problems"] + bad + torn_log(root) + missing_state(root)
    return {**r, "checkpoints": n, "problems": damage, "warnings": stale_rounds(root, cfg)}


def run_identity(cfg: RunConfig) -> str:
    """What makes a store this run's: a hash of the physics and of round 0's requests (the test sets, the initial
    train and val sets: samplers, seeds, counts). The run's store records it when round 0 creates it."""
    import hashlib

    body = {"physics": cfg.task.params_dict(), "round_0": [list(map(_plain, r)) for r in initial_requests(cfg)]}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


def load_checked_run(root: Path) -> RunConfig:
    """The run's config, checked against the run's store (`check_run_store`): no command reads a run whose config
    was edited after its store was made, or whose store is another run's."""
    cfg = load_run(root)
    check_run_store(root, cfg)
    return cfg


def check_run_store(root: Path, cfg: RunConfig, deep: bool = False) -> None:
    """InputError (one line) unless the run's store, where there is one, holds the config's physics and was made
    for this run (its recorded `run_identity`). A store that records none (made before stores recorded it) is
    checked, with `deep`, by its round-0 ids: they must be among the ids the config's round-0 requests draw."""
    from diffcurate.curate.store.lmdbstore import Store

    paths = RunPaths(root)
    if not paths.store.exists():
        return
    with Store(paths.store, readonly=True) as st:
        st.check_physics(cfg.physics, f"{root}/config.toml's physics")
        made_for = st.meta.get("run")
        if made_for == run_identity(cfg) or (made_for is None and (not deep or _round_0_matches(st, cfg))):
            return
    raise InputError(
        f"{paths.store} is not this run's store: its round-0 sets were drawn for another seed or data config than "
        f"{paths.config} gives; restore the run's own store, or start a new run directory for this one"
    )


def _round_0_matches(st, cfg: RunConfig) -> bool:
    """Whether every round-0 sample of the store is one that the config's round-0 requests draw (planned here,
    without Ray, as `fill` plans them)."""
    from diffcurate.curate.cluster.generate import plan_blocks

    index = st.index()
    claimed: dict[str, str] = {}
    for split, sampler, seed, count, sources in initial_requests(cfg):
        walk = next(plan_blocks(st, None, sampler, seed, count, sources, split, None, claimed))  # the whole walk
        claimed.update(dict.fromkeys(walk.ids, split))
    stored = index[index["round"] == 0]
    return all(claimed.get(i) == sp for i, sp in zip(stored["id"], stored["split"], strict=True))
