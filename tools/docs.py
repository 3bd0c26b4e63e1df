"""Generate docs/cli.md (from the CLI's own option objects, the ones `--help` prints) and docs/config.md (from the
run config's dataclasses), so the reference pages cannot drift from the code.

    .venv/bin/python tools/docs.py           # rewrite both pages
    .venv/bin/python tools/docs.py --check   # exit 1 if either page is out of date (tests/test_docs.py)
"""

from __future__ import annotations

import argparse
import inspect
import sys
from dataclasses import MISSING, fields
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# what the training and model fields of config.toml mean (their dataclasses carry no comments of their own)
TRAIN_DOCS = {
    "epochs": "stop = epochs: epochs per round (the run's `min_steps` may add more); plateau: the most epochs",
    "batch_size": "samples per optimiser step",
    "lr": "Adam learning rate (peak)",
    "warmup_steps": "steps of linear warm-up from 0 to lr",
    "const_frac": "share of the steps at the peak lr before the cosine decay starts",
    "final_lr_ratio": "lr at the last step, as a fraction of the peak",
    "weight_decay": "Adam weight decay",
    "grad_clip": "gradient-norm clip (absent: none)",
    "loss": "pointwise penalty: mae, mse, huber or berhu",
    "weight": "per-pixel weight w(y): none, exp = exp(-(1 - y) / w), step = 1 + a tanh(b y) (the paper's)",
    "alt_loss": "the penalty the schedule switches to (absent: the same)",
    "alt_weight": "the weight the schedule switches to (absent: exp <-> step)",
    "delta": "huber / berhu threshold, in target units",
    "w": "`exp` weight length scale, in target units",
    "a": "`step` weight amplitude (dimensionless): pixels with large y weigh up to 1 + a",
    "b": "`step` weight steepness (per target unit)",
    "reduction": "mean = <w rho(e)> (the paper's); weighted = sum(w rho) / sum(w), scale-free across weights",
    "transform": "target transform: none or sqrt (predictions are mapped back)",
    "schedule": "loss schedule: fixed, toggle (every schedule_period epochs) or random",
    "schedule_period": "epochs between toggles",
    "schedule_prob": "random schedule: probability of the primary loss in an epoch",
    "patience": "epochs without a better val MAE before stopping (epochs) or cooling down (plateau); absent: never",
    "stop": "epochs: train `epochs` epochs; plateau: constant lr until val MAE stalls for `patience` epochs, then a "
    "cosine cool-down to the lr floor, then stop (training to convergence; best weights kept either way)",
    "min_steps": "plateau: optimiser steps before a stall may start the cool-down",
    "max_steps": "plateau: the cool-down ends by this many steps at the latest (0: `epochs` bounds it alone)",
    "cooldown": "plateau: the cool-down's length as a fraction of the epochs before it (at least one epoch)",
    "channels_last": "NHWC activations (faster convolutions on CPUs; docs/benchmarks.md)",
    "amp": "bf16 autocast of the forward pass: auto (on a GPU), bf16 (also on a CPU), fp32 (never)",
    "seed": "network init, shuffle order and loss schedule",
}
MODEL_DOCS = {
    "arch": "edcnn (the paper's encoder-decoder) or unet",
    "enc_channels": "edcnn: channels of each encoder stage (a pooling after all but the last)",
    "dec_channels": "edcnn: channels of each decoder stage",
    "base": "unet: channels of the first level (doubling per level)",
    "depth": "unet: number of down-sampling levels",
    "slope": "LeakyReLU negative slope",
    "dropout": "dropout rate (> 0 enables the mc-dropout estimator)",
    "clamp_sources": "copy the known disc values of x into the output (fixed sources only)",
}
TOP_DOCS = {
    "preset": "the preset the config started from (physics and defaults)",
    "physics": "lattice (L), radius (R, pixels), diffusion (D), decay (gamma, 1/time), source_model (fixed or production)",
    "sources": "[MIN, MAX] number of sources per configuration",
    "model": "the network (below)",
    "train": "the training of each round (below)",
}


def _comments(cls) -> dict[str, str]:
    """`name: type = default  # comment` -> {name: comment} from the class source."""
    src, _ = inspect.getsourcelines(cls)
    out = {}
    for line in src:
        if "#" in line and ":" in line.split("#")[0]:
            head, comment = line.split("#", 1)
            name = head.split(":")[0].strip()
            if name.isidentifier():
                out[name] = comment.strip()
    return out


def _default(f) -> str:
    if f.default is not MISSING:
        v = f.default
    elif f.default_factory is not MISSING:
        v = f.default_factory()
    else:
        return "(required)"
    return "(absent)" if v is None else f"`{v!r}`".replace("'", '"')


def config_md() -> str:
    from diffcurate.curate.loop.config import AcquisitionConfig, DataConfig, RayConfig, RunConfig
    from diffcurate.model.nets import EDCNNConfig, UNetConfig
    from diffcurate.model.train import TrainConfig

    lines = [
        "# config.toml",
        "",
        "Every run directory holds one `config.toml`: the whole run as data (`curate init RUN_DIR` writes the preset's",
        "defaults; edit it before the first `curate run`). Every random choice derives from `seed` (and",
        "`data.test_seed`). Generated from the config dataclasses by `tools/docs.py`; a test keeps it current.",
        "",
        "Units: lengths in lattice pixels, the field u and all errors in target units (u is in [0, 1]), time in the",
        "PDE's units (gamma = 1 / time), sizes in samples.",
        "",
        "## Top level",
        "",
        "| field | default | meaning |",
        "|---|---|---|",
    ]
    notes = _comments(RunConfig)
    for f in fields(RunConfig):
        if f.name in ("data", "acquisition", "ray"):
            continue
        lines.append(f"| `{f.name}` | {_default(f)} | {notes.get(f.name) or TOP_DOCS.get(f.name, '')} |")
    for title, cls in (("[data]", DataConfig), ("[acquisition]", AcquisitionConfig), ("[ray]", RayConfig)):
        notes = _comments(cls)
        lines += [
            "",
            f"## {title}",
            "",
            (cls.__doc__ or "").strip(),
            "",
            "| field | default | meaning |",
            "|---|---|---|",
        ]
        lines += [
            f"| `{f.name}` | {_default(f)} | {notes.get(f.name, '').replace('|', chr(92) + '|')} |" for f in fields(cls)
        ]
    lines += [
        "",
        "## [train]",
        "",
        "Each preset's defaults come from one table, `PRESET_DEFAULTS` in `solvers/problem.py`.",
        "",
        "| field | default | meaning |",
        "|---|---|---|",
    ]
    train_fields = {f.name: f for f in fields(TrainConfig)}
    lines += [f"| `{k}` | {_default(train_fields[k])} | {TRAIN_DOCS[k]} |" for k in TrainConfig().to_dict()]
    lines += _preset_training()
    for title, cls in (('[model] (arch = "edcnn")', EDCNNConfig), ('[model] (arch = "unet")', UNetConfig)):
        lines += ["", f"## {title}", "", "| field | default | meaning |", "|---|---|---|"]
        lines += [f"| `{f.name}` | {_default(f)} | {MODEL_DOCS[f.name]} |" for f in fields(cls)]
    return "\n".join(lines) + "\n"


def _preset_training() -> list[str]:
    """What each preset sets in [train] (`curate train`), and what a curation run sets on top."""
    from diffcurate.model.train import TrainConfig
    from diffcurate.solvers.problem import PRESET_DEFAULTS

    keys = sorted({k for d in PRESET_DEFAULTS.values() for k in d["train"]}, key=list(TrainConfig().to_dict()).index)
    lines = [
        "",
        "Each preset's [train] values where they differ from the defaults above (`curate train` and `curate run`",
        "alike; a run may set more, `run.train` in the table):",
        "",
        "| preset | " + " | ".join(f"`{k}`" for k in keys) + " | run.train |",
        "|---|" + "---|" * (len(keys) + 1),
    ]
    for name, d in PRESET_DEFAULTS.items():
        cells = [f"`{d['train'][k]}`" if k in d["train"] else "" for k in keys]
        run = d.get("run", {}).get("train", {})
        lines.append(
            f"| {name} | " + " | ".join(cells) + " | " + ", ".join(f"`{k} = {v}`" for k, v in run.items()) + " |"
        )
    return lines


def _type_name(p, ctx) -> str:
    """The type as `--help` shows it (int, float, path, ...; flags say flag)."""
    if getattr(p, "is_flag", False):
        return "flag"
    shown = str(p.display_type(ctx)).strip("<>")
    return shown.replace("|", "\\|")


def cli_md() -> str:
    import typer

    from diffcurate.curate.cli.app import COMMANDS, HELP, app

    root = typer.main.get_command(app)
    ctx = typer.Context(root)
    lines = [
        "# CLI reference",
        "",
        HELP,
        "",
        "Generated from the commands' own options (what `curate COMMAND --help` prints) by `tools/docs.py`; a test",
        "keeps it current. Bad input: one line on stderr, exit 2; `verify` finding damage: exit 1; Ctrl-C: 130",
        "(see [formats.md](formats.md#exit-codes-and-errors)). `CURATE_DEBUG=1` adds the traceback.",
        "",
        "`curate --version` prints the version.",
    ]
    for name, _ in COMMANDS:
        cmd = root.commands[name]
        doc = inspect.cleandoc(cmd.help or "")
        args = [p for p in cmd.params if p.param_type_name == "argument"]
        usage = " ".join([f"curate {name}", *[p.metavar or p.name.upper() for p in args], "[OPTIONS]"])
        lines += ["", f"## `curate {name}`", "", doc, "", f"    {usage}", ""]
        opts = [p for p in cmd.params if p.param_type_name == "option" and p.name != "help"]
        if opts:
            lines += ["| option | type | default | meaning |", "|---|---|---|---|"]
            for p in opts:
                flag = " / ".join([*p.opts, *p.secondary_opts])
                default = "" if p.required else ("(none)" if p.default is None else f"`{p.default}`")
                help_text = (p.help or "").replace("|", "\\|")
                lines.append(
                    f"| `{flag}` | {_type_name(p, ctx)} | {'required' if p.required else default} | {help_text} |"
                )
    return "\n".join(lines) + "\n"


PAGES = {"cli.md": cli_md, "config.md": config_md}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a page is out of date")
    args = ap.parse_args()
    stale = []
    for name, make in PAGES.items():
        path = ROOT / "docs" / name
        text = make()
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)} (run .venv/bin/python tools/docs.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
