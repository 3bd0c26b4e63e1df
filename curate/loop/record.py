"""A round's record (a line of rounds.jsonl): built from what the round's steps wrote to state/round-k/, appended
when the round ends, and rebuilt the same way where the log lost it; and when a run stops."""

from __future__ import annotations

import json
from pathlib import Path

from diffcurate.curate.loop.config import RunConfig
from diffcurate.curate.loop.rundir import PIPELINED, RunPaths, append_round, read_rounds
from diffcurate.curate.loop.steps import STEP_NAMES
from diffcurate.curate.store.lmdbstore import Store
from diffcurate.model.metrics import Metrics


def round_record(root: Path, cfg: RunConfig, k: int) -> dict:
    """The record of round k (a line of rounds.jsonl), from what its steps wrote to state/round-k/ and the store:
    the runner appends it when the round ends, and it is rebuilt the same way where the log lost it."""
    files = RunPaths(root).round(k)
    meta = json.loads(files.meta.read_text())
    ev = json.loads(files.eval.read_text())
    timing = json.loads(files.timing.read_text()) if files.timing.exists() else {}
    with Store(RunPaths(root).store, readonly=True) as st:
        index = st.index()
    train_size = int(((index["split"] == "train") & (index["round"] <= k)).sum())  # what round k trained on
    sec = {s: round(v["end"] - v["start"], 3) for s, v in timing.items()}
    seconds = {s: sec.get(s, 0.0) for s in STEP_NAMES}
    # the round's own wall time: steps done ahead during the previous round (pipelined) do not count
    own = [v for v in timing.values() if not v["actor"].endswith(PIPELINED)]
    seconds["total"] = round(max(v["end"] for v in own) - min(v["start"] for v in own), 3) if own else 0.0
    return {
        "round": k,
        "train_size": train_size,
        "added": meta["added"],
        "added_by_sources": meta["added_by_sources"],
        "solves": meta["solves"],
        "test": ev["test"],
        **({"held_out": ev["held_out"]} if "held_out" in ev else {}),
        **({"mined": meta["mined"]} if meta.get("mined") else {}),
        "seconds": seconds,
        "strategy": cfg.acquisition.strategy,
        **({"members": [_member_summary(e) for e in ev["members"]]} if "members" in ev else {}),
        "timeline": [{"step": s, **v} for s, v in sorted(timing.items(), key=lambda kv: kv[1]["start"])],
    }


def _member_summary(ev: dict) -> dict:
    t = Metrics.from_dict(ev["test"])
    return {"member": ev["member"], "mae": t.mae_all, "p99": t.p99, "rel_l2": t.rel_l2, "rel_l2_mean": t.rel_l2_mean}


def finished_unlogged(root: Path) -> list[int]:
    """Rounds past the log's last whole record whose state says they finished (meta.json and eval.json written):
    what a torn last line, or a kill between a round's evaluation and its append, left out of rounds.jsonl."""
    paths, k, out = RunPaths(root), len(read_rounds(root)), []
    while paths.round(k).meta.exists() and paths.round(k).eval.exists():
        out.append(k)
        k += 1
    return out


def rounds_with_state(root: Path, cfg: RunConfig) -> list[dict]:
    """rounds.jsonl's records, and after them the rounds that state/ shows finished but the log lacks."""
    return read_rounds(root) + [round_record(root, cfg, k) for k in finished_unlogged(root)]


def mend_round_log(root: Path, cfg: RunConfig) -> int:
    """Rewrite rounds.jsonl with the finished rounds it lacks (`finished_unlogged`), as `curate run` does before
    it starts anything; returns how many records it added."""
    missing = finished_unlogged(root)
    for k in missing:
        append_round(root, round_record(root, cfg, k))
    return len(missing)


def stop_reason(cfg: RunConfig, done: list[dict], rounds: int) -> str | None:
    """Why the run stops now (None: run round len(done)). Round 0 trains on the initial set; rounds 1..K
    acquire, so a run of K rounds holds K + 1 round records."""
    if len(done) > rounds:
        return f"round 0 and {rounds} acquisition round{'s' if rounds != 1 else ''} done"
    spent = sum(r["solves"] for r in done)
    if cfg.max_solves and spent >= cfg.max_solves:
        return f"solve budget spent ({spent} >= {cfg.max_solves})"
    p99 = Metrics.from_dict(done[-1]["test"]).p99 if done else None
    if cfg.target_p99 and done and p99 <= cfg.target_p99:
        return f"test p99 {p99:.4g} <= target {cfg.target_p99:g}"
    return None
