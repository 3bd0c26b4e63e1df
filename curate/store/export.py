"""Export a store to the config-array layout of docs/formats.md with a dataset card, and import such files into a store.

An export writes the problem's configuration arrays, x float32 (the problem's `encode`), y float32, the problem
and its parameters and `ids`, plus per-sample provenance arrays `split`, `sampler` (str), `round` (int64) and
`score` (float64, NaN = none) so that an import restores them. Rows are ordered by id, so exporting equal stores
gives byte-identical arrays. Next to the file: `<out>.card.json` and `<out>.card.md` (problem, physics, strata,
samplers, rounds, acquisition provenance, sha256 of each array, the command). Everything is held in memory: x
and y cost 4 (C_in + C_out) H W bytes per sample.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from diffcurate.common.errors import InputError
from diffcurate.common.files import atomic_path, atomic_text
from diffcurate.common.splits import SPLITS, check_split
from diffcurate.curate.store.arrays import format_of, load_arrays, save_arrays, validated_samples
from diffcurate.curate.store.env import is_store
from diffcurate.curate.store.lmdbstore import Store
from diffcurate.curate.store.lock import check_writable
from diffcurate.solvers.interface import Task


def card_paths(out: str | os.PathLike) -> tuple[Path, Path]:
    out = Path(out)
    return out.with_name(out.name + ".card.json"), out.with_name(out.name + ".card.md")


def _sha256(a: np.ndarray) -> str:
    """Of the array's C-order bytes, read in place (no copy for a contiguous array)."""
    a = np.ascontiguousarray(a)
    return hashlib.sha256(a.view(np.uint8) if a.dtype.kind != "U" else a.tobytes()).hexdigest()


LICENSE = "MIT"
SPLITS_MADE = (
    "train: the run's seeded random initial set plus each round's picks (round > 0, with the strategy, cluster and "
    "score that chose them); val: a seeded random set of the run's sampler, for early stopping; test: a fixed "
    "grid of per-stratum cells per sampler family (data.test_seed), the same for every run of one config; a "
    "sample's id is a hash of physics and configuration, so no sample is in two splits"
)


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("diffcurate")
    except metadata.PackageNotFoundError:
        return "(source tree)"


def field_descriptions(task: Task) -> dict:
    """What each array of an export holds: the problem's own words for x, y and its configuration arrays
    (`Problem.field_docs`), then the provenance arrays."""
    return {
        **task.problem.field_docs(task.params),
        "split": "train, val or test",
        "sampler": "the sampler family, or `mutant` for a mined configuration",
        "round": "0 for the initial sets, k for samples picked in round k",
        "score": "the acquisition score that picked it (NaN: not scored)",
    }


def _nested(a: np.ndarray):
    """(n, *dims) float32 -> nested Arrow lists (one level per axis after the first)."""
    import pyarrow as pa

    out = pa.array(np.ascontiguousarray(a, np.float32).reshape(-1), pa.float32())
    for size in reversed(a.shape[1:]):
        out = pa.ListArray.from_arrays(np.arange(0, len(out) + 1, size, dtype=np.int32), out)
    return out


def write_parquet(out: Path, task: Task, configs, x, y, ids, extra: dict) -> None:
    """One row per sample: id, x and y as nested lists of float32 ((H, W), or (C, H, W) for several channels),
    the problem's configuration arrays (a ragged one cut to its length), the stratum, split, sampler, round,
    score; the problem and its parameters in the schema metadata. Loads with `datasets.Dataset.from_parquet`
    and `pandas.read_parquet`."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError("--format parquet needs pyarrow: pip install 'diffcurate[parquet]'") from None
    schema = task.problem.schema(task.params)
    arrays = task.to_arrays(configs)
    columns = {}
    for key, spec in schema.items():
        rows = arrays[key]
        if spec.length:
            rows = [rows[s, : int(arrays[spec.length][s])].tolist() for s in range(len(rows))]
        columns[key] = pa.array(rows.tolist() if isinstance(rows, np.ndarray) else rows)
    table = pa.table(
        {
            "id": pa.array(ids.tolist(), pa.string()),
            "x": _nested(x),
            "y": _nested(y),
            **columns,
            "stratum": pa.array(task.strata(configs).astype(np.int64)),
            **{name: pa.array(v.tolist()) for name, v in extra.items()},
        },
        metadata={
            b"diffcurate.problem": task.name.encode(),
            b"diffcurate.physics": json.dumps(task.params_dict()).encode(),
        },
    )
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)


def export_store(
    store_path: str | os.PathLike,
    out: str | os.PathLike,
    fmt: str | None = None,
    split: str = "all",
    max_round: int | None = None,
    force: bool = False,
    command: str = "",
) -> dict:
    """Write the samples of `split` (train/val/test/all) up to `max_round` to `out`; returns the card."""
    out = Path(out)
    if out.is_dir():
        raise InputError(f"{out} is a directory; --out takes a file name such as {out / 'export.npz'}")
    f = "parquet" if str(fmt or out.suffix.lstrip(".")).lower() == "parquet" else format_of(out, fmt)
    check_split(split)
    if not out.parent.is_dir():
        raise InputError(f"{out}: directory {out.parent} does not exist")
    check_writable(out.parent)
    # the cards are written before the data file's rename: cards without their file are what a killed export
    # left, and are replaced; an existing data file needs --force
    if out.exists() and not force:
        raise InputError(f"{out} exists; pass --force to overwrite")
    remove_stale_temps(out)
    with Store(store_path, readonly=True) as st:
        df = st.index()
        if split != "all":
            df = df[df["split"] == split]
        if max_round is not None:
            df = df[df["round"] <= max_round]
        if df.empty:
            raise InputError(f"nothing to export from {store_path} (split={split}, max_round={max_round})")
        skipped = list(st.damaged)  # damaged index entries: not exported
        df = df.sort_values("id").reset_index(drop=True)
        configs, y, headers = st.get(df["id"].tolist(), skip_damaged=True)  # y (n, H, W) float32
        skipped += st.damaged
        if st.damaged:  # records that failed their checksum: their rows go too
            good = {h["id"] for h in headers}
            df = df[df["id"].isin(good)].reset_index(drop=True)
        task, meta, record = st.task, dict(st.meta), st.problem_record
    x = task.encode(configs)  # (n, C_in, H, W) float32
    x = x[:, 0] if x.shape[1] == 1 else x  # one channel: (n, H, W)
    extra = {
        "split": np.array(df["split"].tolist(), dtype=str),
        "sampler": np.array(df["sampler"].tolist(), dtype=str),
        "round": df["round"].to_numpy(np.int64),
        "score": df["score"].to_numpy(np.float64),
    }
    arrays = {**task.to_arrays(configs), "x": x, "y": y, **extra}
    strategies = [h["provenance"].get("strategy") for h in headers]
    by_round = {}
    for r, g in df.groupby("round"):
        s = g["score"].dropna()
        by_round[str(r)] = {
            "count": len(g),
            "samplers": {str(k): int(v) for k, v in g["sampler"].value_counts().sort_index().items()},
            "strategies": sorted({str(strategies[i]) for i in g.index if strategies[i] is not None}),
            "score": None if s.empty else {"min": float(s.min()), "mean": float(s.mean()), "max": float(s.max())},
        }
    card = {
        "file": out.name,
        "format": f,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command,
        "physics": task.params_dict(),
        "problem": record,
        "description": task.problem.description,
        "stratum": task.problem.stratum,
        "preset": meta.get("preset", ""),
        "store_schema_version": meta["schema_version"],
        "store_encoding": meta["encoding"],
        "selection": {"split": split, "max_round": max_round},
        "n_samples": len(df),
        "by_split": {str(k): int(v) for k, v in df["split"].value_counts().sort_index().items()},
        "by_stratum": {str(k): int(v) for k, v in df["stratum"].value_counts().sort_index().items()},
        "by_sampler": {str(k): int(v) for k, v in df["sampler"].value_counts().sort_index().items()},
        "rounds": by_round,
        "store_history": meta.get("history", []),  # the generate / import commands that filled the store
        "skipped_damaged": len(skipped),  # damaged records or index entries left out (see `curate verify`)
        "sha256": {k: _sha256(a) for k, a in arrays.items()},
        "license": LICENSE,
        "citation": task.problem.citation,
        "generator": f"diffcurate {_version()}",
        "fields": field_descriptions(task),
        "splits_made": SPLITS_MADE,
    }
    jpath, mpath = card_paths(out)
    try:
        atomic_text(jpath, json.dumps(card, indent=2) + "\n")
        atomic_text(mpath, card_markdown(card))
        if f == "parquet":
            write_parquet(out, task, configs, x, y, df["id"].to_numpy(str), extra)
        else:
            save_arrays(out, task, configs, x=x, y=y, ids=df["id"].to_numpy(str), extra=extra, fmt=f)
    except OSError:  # a full disk: no cards without their file (a kill leaves them, and the next export replaces them)
        for p in (jpath, mpath):
            p.unlink(missing_ok=True)
        raise
    return card


def remove_stale_temps(out: Path) -> None:
    """Delete the temp files (`.NAME.*.tmp`) that a killed export of `out` or its cards left next to it; every
    writer of these names renames or removes its temp file unless it is killed."""
    for name in (out, *card_paths(out)):
        for tmp in out.parent.glob(f".{glob.escape(name.name)}.*.tmp"):
            tmp.unlink(missing_ok=True)


def card_markdown(card: dict) -> str:
    ph, pr = card["physics"], card["problem"]
    stratum = card.get("stratum", "stratum")
    lines = [
        f"# Dataset card: {card['file']}",
        "",
        f"{card['n_samples']} samples ({card['format']}), exported {card['created']} by `{card['command']}`.",
        "",
        "## Problem and physics",
        f"Problem `{pr['name']}` ({pr.get('package', '?')} {pr.get('version', '?')}): {card.get('description', '')}.",
        ", ".join(f"{k}={v}" for k, v in ph.items()) + f"; preset `{card['preset'] or '-'}`. "
        f"Targets stored as {card['store_encoding']}, exported as float32.",
        "",
        f"## Samples per stratum ({stratum})",
        f"| {stratum} | samples |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in card["by_stratum"].items()],
        "",
        "Splits: " + ", ".join(f"{k} {v}" for k, v in card["by_split"].items()),
        "Samplers: " + ", ".join(f"{k} {v}" for k, v in card["by_sampler"].items()),
        "",
        "## Rounds and acquisition",
        "| round | samples | samplers | strategies | score min / mean / max |",
        "|---|---|---|---|---|",
    ]
    for r, d in card["rounds"].items():
        s = d["score"]
        score = "-" if s is None else f"{s['min']:.3g} / {s['mean']:.3g} / {s['max']:.3g}"
        smp = ", ".join(f"{k} {v}" for k, v in d["samplers"].items())
        lines.append(f"| {r} | {d['count']} | {smp} | {', '.join(d['strategies']) or '-'} | {score} |")
    if card.get("store_history"):
        lines += [
            "",
            "## How the store was filled",
            "| finished | command | split | asked | added |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {h.get('finished', '-')} | `{h.get('command') or h['kind']}` | {h.get('split', '-')} | "
            f"{h.get('count', '-')} | {h.get('added', '-')} |"
            for h in card["store_history"]
        ]
        lines += ["", "(rounds of `curate run` are recorded per sample: round, strategy, score)"]
    if "fields" in card:
        lines += ["", "## Fields", *[f"- `{k}`: {v}" for k, v in card["fields"].items()]]
        lines += ["", "## How the splits were made", card["splits_made"]]
        lines += [
            "",
            "## Licence and citation",
            f"Licence: {card['license']}. Made with {card['generator']}.",
            *([f"Cite the problem's source: {card['citation']}."] if card.get("citation") else []),
        ]
    lines += ["", "## sha256 of the arrays (C-order bytes)", *[f"- `{k}`: {v}" for k, v in card["sha256"].items()]]
    return "\n".join(lines) + "\n"


def import_arrays(
    store_path: str | os.PathLike,
    path: str | os.PathLike,
    split: str | None = "train",
    sampler: str = "import",
    round: int = 0,
    create: bool = True,
    command: str = "",
) -> int:
    """Add the samples of an npz/HDF5 file (needs `y`) to a store; returns how many were new.

    Ids are derived from the configs with `sample_id` (files from `curate solve` carry none); where the file
    has `ids` they must agree. `split=None` takes each row's split from the file's `split` array (an export).
    The file's `sampler`/`round`/`score` arrays, where present, override `sampler`/`round`. A missing store is
    created with the file's physics when `create`; a store with other physics refuses the file."""
    d = load_arrays(path)
    task, configs, y = validated_samples(d, str(path))  # every row, before anything is written
    n = len(configs)
    if "ids" in d:
        ids = task.sample_ids(configs)
        bad = [s for s in range(n) if ids[s] != str(d["ids"][s])]
        if bad:
            raise InputError(f"{path}: row {bad[0]} has id {d['ids'][bad[0]]} that does not match its configuration")
    splits = np.array([split] * n) if split is not None else d.get("split")
    if splits is None:
        raise InputError(f"{path}: no `split` array; name the split to import into")
    splits = np.asarray(splits).astype(str)
    unknown = sorted(set(splits.tolist()) - set(SPLITS))
    if unknown:
        raise InputError(f"{path}: unknown splits {unknown} (choose {', '.join(SPLITS)})")
    samplers = np.asarray(d["sampler"]).astype(str).tolist() if "sampler" in d else [sampler] * n
    try:
        rounds = np.asarray(d["round"], np.int64) if "round" in d else np.full(n, round)
        scores = np.asarray(d["score"], np.float64) if "score" in d else None
    except (TypeError, ValueError):
        raise InputError(f"{path}: `round` must be integers and `score` numbers") from None
    if len(samplers) != n or rounds.shape != (n,) or (scores is not None and scores.shape != (n,)):
        raise InputError(f"{path}: sampler, round and score must have one value per row ({n})")
    check_writable(store_path)
    new_store = create and not is_store(store_path)
    if new_store:
        st = Store.create(store_path, task.params, command=command, problem=task.name)
    else:
        st = Store(store_path)
    try:
        with st:
            if st.problem.name != task.name:
                raise InputError(
                    f"{path} holds samples of problem {task.name!r}; {store_path} is of {st.problem.name!r}"
                )
            st.check_physics(task.params, what=f"the samples of {path}")
            items = []
            # group rows by (split, round): `records` takes one of each per call; one transaction for all
            for sp, rd in sorted({(str(a), int(b)) for a, b in zip(splits, rounds, strict=True)}):
                rows = np.nonzero((splits == sp) & (rounds == rd))[0]
                items += st.records(
                    configs[rows],
                    y[rows],
                    split=sp,
                    sampler=[samplers[r] for r in rows],
                    round=rd,
                    scores=None if scores is None else scores[rows],
                )
            added = st.add_atomic(items)
            st.log(
                {
                    "kind": "import",
                    "input": str(path),
                    "split": split or "from file",
                    "count": n,
                    "added": added,
                    "command": command,
                }
            )
    except BaseException:
        if new_store:  # a rejected import leaves no store behind
            shutil.rmtree(store_path, ignore_errors=True)
        raise
    return added
