"""Curation versus random and stratified sampling at convergence: learning curves, ratios at equal size and at
equal seconds, held-out families. The protocol, records, statistics and figures live in bench/study/.

    .venv/bin/python bench/al_study.py --quick                                  # 1 seed, 2 rounds: < 15 min
    .venv/bin/python bench/al_study.py --config bench/al_study.toml --commit    # the study (docs/results.json)
    .venv/bin/python bench/al_study.py --config bench/al_study.toml --summarise # results from the records only
    .venv/bin/python bench/al_study.py --quick --extra-test FILE.npz            # also every final model on FILE

Every run is an ordinary run directory under --out (resumable), and each finished run leaves a small record
under docs/study/runs/ (with --commit, committed as it lands), so the study continues on another machine without
runs/. results.json and the figures are computed from the records alone, when every record is there.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.study import records  # noqa: E402
from bench.study.jobs import shard_main  # noqa: E402
from bench.study.protocol import default_variant, jobs, load_spec  # noqa: E402
from bench.study.tables import markdown, summarise  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, help="TOML: preset, rounds, [protocol], [arms.NAME], [transfer]")
    ap.add_argument("--quick", action="store_true", help="the same protocol with 1 seed and 2 rounds")
    ap.add_argument("--out", type=Path, help="run directories (default runs/study/full or runs/study/quick)")
    ap.add_argument("--docs", type=Path, help="results.json and figures (default docs/, or docs/quick/ with --quick)")
    ap.add_argument("--records", type=Path, help="per-run records (default DOCS/study/runs)")
    ap.add_argument("--workers", type=int, default=2, help="processes running runs side by side")
    ap.add_argument("--commit", action="store_true", help="git-commit each record as it lands")
    ap.add_argument("--summarise", action="store_true", help="only compute results.json from the records")
    ap.add_argument("--extra-test", type=Path, help="an npz/HDF5 file with y: every final model is evaluated on it")
    ap.add_argument("--arms", help="only these parts, comma-separated (arms, `transfer`; the first arm always)")
    ap.add_argument("--address", help="run on this Ray cluster (default: each worker starts a local one)")
    ap.add_argument("--shard", help=argparse.SUPPRESS)
    ap.add_argument("--markdown", type=Path, help="print the tables of an existing results.json as markdown, and exit")
    args = ap.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return
    spec = load_spec(args.config, args.quick, args.arms.split(",") if args.arms else None)
    out = args.out or Path("runs/study") / ("quick" if args.quick else "full")
    docs = args.docs or Path("docs/quick" if args.quick else "docs")
    recs = args.records or docs / "study" / "runs"
    if args.extra_test is not None:  # checked before hours of runs, with the one loader every command uses
        from diffcurate.common.errors import InputError
        from diffcurate.curate.store.dataset import load_file_dataset

        try:
            load_file_dataset(args.extra_test)
        except InputError as e:
            raise SystemExit(f"error: {e}") from None
    if args.shard:
        i, n = (int(x) for x in args.shard.split("/"))
        shard_main(spec, i, n, out, recs, args.commit, args.address)
        return
    if not args.summarise:
        base = [sys.executable, __file__, "--out", str(out), "--records", str(recs)]
        base += (["--quick"] if args.quick else []) + (["--commit"] if args.commit else [])
        base += ["--config", str(args.config)] if args.config else []
        base += ["--arms", args.arms] if args.arms else []
        base += ["--address", args.address] if args.address else []
        procs = [subprocess.Popen([*base, "--shard", f"{i}/{args.workers}"]) for i in range(args.workers)]
        codes = [p.wait() for p in procs]
        if any(codes):
            raise SystemExit(f"error: a worker failed (exit codes {codes}); re-run the same command to resume")
    missing = [j for j in jobs(spec, None) if "best" not in j and not records.exists(recs, *j)]
    if missing:
        raise SystemExit(f"error: {len(missing)} runs have no record yet (first: {missing[0]}); run the study")

    command = " ".join(["bench/al_study.py", *sys.argv[1:]])
    summarise(spec, recs, docs, command, default_variant(), args.extra_test, out)


if __name__ == "__main__":
    main()
