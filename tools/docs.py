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

# what the top-level fields of config.toml without a comment of their own mean
TOP_DOCS = {
    "preset": "the preset the config started from (physics and defaults)",
    "physics": "the problem's parameters (diffusion: lattice (L), radius (R, pixels), diffusion (D), decay (gamma, "
    "1/time), source_model (fixed or production))",
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
    from diffcurate.model.losses import LossParams
    from diffcurate.model.nets import EDCNNConfig, NetConfig, UNetConfig
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
        "Each preset's defaults come from the tables next to the configs they fill: `TRAIN_PRESETS` in",
        "`model/train.py`, `MODEL_PRESETS` in `model/nets.py` and `RUN_PRESETS` in `curate/loop/config.py`.",
        "",
        "| field | default | meaning |",
        "|---|---|---|",
    ]
    train_fields = {f.name: f for f in fields(TrainConfig)}
    train_notes = {**_comments(LossParams), **_comments(TrainConfig)}
    lines += [f"| `{k}` | {_default(train_fields[k])} | {train_notes[k]} |" for k in TrainConfig().to_dict()]
    lines += _preset_training()
    for title, cls in (('[model] (arch = "edcnn")', EDCNNConfig), ('[model] (arch = "unet")', UNetConfig)):
        lines += ["", f"## {title}", "", "| field | default | meaning |", "|---|---|---|"]
        notes = {**_comments(NetConfig), **_comments(cls)}  # the fields every network's config shares, then its own
        lines += [f"| `{f.name}` | {_default(f)} | {notes[f.name]} |" for f in fields(cls)]
    return "\n".join(lines) + "\n"


def _preset_training() -> list[str]:
    """What each preset sets in [train] (`curate train`), and what a curation run sets on top."""
    from diffcurate.curate.loop.config import RUN_PRESETS
    from diffcurate.model.train import TRAIN_PRESETS, TrainConfig

    keys = sorted({k for d in TRAIN_PRESETS.values() for k in d}, key=list(TrainConfig().to_dict()).index)
    lines = [
        "",
        "Each preset's [train] values where they differ from the defaults above (`curate train` and `curate run`",
        "alike; a run may set more, `run.train` in the table):",
        "",
        "| preset | " + " | ".join(f"`{k}`" for k in keys) + " | run.train |",
        "|---|" + "---|" * (len(keys) + 1),
    ]
    for name, d in TRAIN_PRESETS.items():
        cells = [f"`{d[k]}`" if k in d else "" for k in keys]
        run = RUN_PRESETS[name].get("train", {})
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
