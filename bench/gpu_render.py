"""Render docs/gpu.json (bench/gpu_check.py) as markdown: the GPU rows of docs/benchmarks.md.

.venv/bin/python bench/gpu_render.py            # print the tables
.venv/bin/python bench/gpu_render.py --write    # replace the block between the gpu markers in benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- gpu:begin -->", "<!-- gpu:end -->"


def _f(v, spec=".3g") -> str:
    return "-" if v is None else format(v, spec)


def table(res: dict) -> str:
    m = res["machine"]
    lines = [
        f"Measured by `bash bench/gpu_check.sh`{' --dry-run' if res['dry_run'] else ''} on "
        f"{m.get('gpu', 'CPU only')}, {m['cpu_count']} CPU cores, torch {m['torch']}."
    ]
    s = res["steps"]
    sol = s.get("solvers", {})
    if sol.get("ok"):
        b = res["config"]["batches"]
        lines += [
            "",
            f"Fast solver against the reference, L = {sol['lattice']}, {sol['sources']} sources:",
            "",
            "| device | dtype | max error | " + " | ".join(f"solves/s (batch {x})" for x in b) + " |",
            "|---|---|---|" + "---|" * len(b),
        ]
        for r in sol["rows"]:
            lines.append(
                f"| {r['device']} | {r['dtype']} | {_f(r['max_error'], '.2g')} | "
                + " | ".join(_f(r[f"solves_per_s_b{x}"], ".1f") for x in b)
                + " |"
            )
    mod = s.get("models", {})
    if mod.get("ok"):
        lines += [
            "",
            f"Models, L = {mod['lattice']}:",
            "",
            "| model | parameters | train ms/step fp32 | bf16 | peak GiB fp32 | bf16 | inference ms/sample | "
            "inference / solver |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in mod["rows"]:
            lines.append(
                f"| {r['arch']} | {r['parameters'] / 1e6:.3g} M | {_f(r['train_ms_per_step_fp32'])} | "
                f"{_f(r['train_ms_per_step_bf16'])} | {_f(r.get('peak_mem_gib_fp32'))} | "
                f"{_f(r.get('peak_mem_gib_bf16'))} | {_f(r['inference_ms_per_sample'])} | "
                f"{_f(r.get('inference_over_solver'))} |"
            )
    tr = s.get("train", {})
    if tr.get("ok") and not tr.get("skipped"):
        lines += [
            "",
            f"`curate train` without Ray, {tr['preset']} preset, {tr['samples']} samples, {tr['epochs']} epochs on "
            f"{tr['device']}: " + ", ".join(_f(x, ".0f") for x in tr["train_samples_per_s"]) + " samples/s per epoch.",
        ]
    ld = s.get("loader", {})
    if ld.get("ok"):
        lines += [
            "",
            f"Streamed data path, {ld['preset']} preset, {ld['samples']} samples, batch {ld['batch']} "
            f"(bench/loader.py; the ED-CNN trains at {_f(ld['edcnn_bf16_samples_per_s'], '.0f')} samples/s in bf16):",
            "",
            "| loader workers | items samples/s | batches, x painted on the device | ratio |",
            "|---|---|---|---|",
            *[
                f"| {r['workers']} | {r['items_samples_per_s']:.0f} | {r['batches_samples_per_s']:.0f} | "
                f"{r['ratio']:.2f} |"
                for r in ld["rows"]
            ],
        ]
    gen = s.get("generate", {})
    if gen.get("ok") and not gen.get("skipped"):
        lines += [
            "",
            f"`curate generate`, {gen['count']} samples, {gen['gpus_per_actor']:g} GPU per solver actor: "
            f"{_f(gen['samples_per_s'], '.1f')} samples/s.",
        ]
    run = s.get("run", {})
    if run.get("ok") and not run.get("skipped"):
        lines += [
            "",
            f"`curate run`, {run['preset']} preset, round 0 + {run['rounds'] - 1} rounds: "
            f"{run['seconds']:.0f} s; trainer on the GPU: {run['trainer_on_gpu']}; training "
            + ", ".join(_f(x, ".0f") for x in run["train_samples_per_s"])
            + " samples/s per round.",
        ]
    skipped = [f"{k} ({v['skipped']})" for k, v in s.items() if v.get("skipped")]
    if skipped:
        lines += ["", "Steps skipped: " + "; ".join(skipped)]
    failed = [f"{k}: {v['error']}" for k, v in s.items() if not v.get("ok")]
    if failed:
        lines += ["", "Steps that failed: " + "; ".join(failed)]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, default=ROOT / "docs" / "gpu.json")
    ap.add_argument("--write", action="store_true", help="update docs/benchmarks.md between the gpu markers")
    args = ap.parse_args()
    text = table(json.loads(args.json.read_text()))
    if not args.write:
        print(text)
        return 0
    doc = ROOT / "docs" / "benchmarks.md"
    old = doc.read_text()
    if BEGIN not in old or END not in old:
        print(f"error: {doc} has no {BEGIN} ... {END} block", file=sys.stderr)
        return 2
    head, rest = old.split(BEGIN, 1)
    doc.write_text(head + BEGIN + "\n" + text + "\n" + END + rest.split(END, 1)[1])
    print(f"wrote the GPU rows of {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
