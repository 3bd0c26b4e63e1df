"""Error estimators on a run directory: resolve a checkpoint, build the extras an estimator needs (ensemble
members, the inverse net: trained once per round and kept next to the checkpoints), calibrate on the val split
(RUN_DIR/estimators/<name>.json), score candidates for the loop, and judge the estimators on the test split.

Files in a run directory (round k = the checkpoint's round):

    checkpoints/round-NNN-member-M.pt   ensemble member M = 1..K-1 (seed = the run's seed + 1000 M; written by
                                        the loop itself when it runs M > 1 trainers, else trained on demand)
    checkpoints/round-NNN-inverse.pt    the inverse net (true field -> source image)
    estimators/<name>.json              calibration of <name> for the checkpoint named inside it

A checkpoint outside a run directory supports what needs only itself (residual, residual-l1, residual-exact,
mc-dropout), uncalibrated: their raw scores are already in field units (residual: an error field's mean).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from diffcurate.common.errors import InputError, hint
from diffcurate.curate.loop.health import load_checked_run
from diffcurate.curate.loop.rundir import RunPaths, load_run, member_train_config, read_rounds
from diffcurate.model.estimators import (
    ESTIMATORS,
    Calibration,
    Member,
    Models,
    auroc,
    check_available,
    fit,
    get_estimator,
    inverse_model_config,
    raw_estimate,
    spearman,
)
from diffcurate.solvers.interface import Batch, Task
from diffcurate.solvers.plugins import as_task, task_of

ENSEMBLE_SIZE = 3  # K: the surrogate + K-1 members
INVERSE_MIN_EPOCHS = 20  # the inverse net is small and cheap; the surrogate's few (tiny: 3) epochs leave it blind
_ROUND = re.compile(r"^round-(\d{3})\.pt$")
Log = Callable[[str], None]


@dataclass
class Source:
    """A checkpoint and, when it lies in a run directory, the run and its round."""

    checkpoint: Path
    run_dir: Path | None = None
    round: int | None = None

    @property
    def paths(self) -> RunPaths:
        if self.run_dir is None:
            raise InputError(f"{self.checkpoint} is not inside a run directory")
        return RunPaths(self.run_dir)

    def member(self, m: int) -> Path:
        return self.paths.member(self.round, m)

    def inverse(self) -> Path:
        return self.paths.inverse(self.round)

    def calibration(self, name: str) -> Path:
        return self.paths.estimator(name)


def resolve_source(path) -> Source:
    """A run directory (its latest completed round) or a checkpoint file (in a run directory or bare)."""
    path = Path(path)
    if path.is_dir():
        load_run(path)  # InputError if it is no run directory
        rounds = read_rounds(path)
        if not rounds:
            raise InputError(f"{path} has no completed round yet; run {hint('run', path)} first")
        k = int(rounds[-1]["round"])
        ckpt = RunPaths(path).checkpoint(k)
        if not ckpt.is_file():
            raise InputError(f"checkpoint not found: {ckpt}")
        return Source(ckpt, path, k)
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    m = _ROUND.match(path.name)
    root = path.parent.parent
    if m and path.parent.name == "checkpoints" and RunPaths(root).config.is_file():
        return Source(path, root, int(m.group(1)))
    return Source(path)


def _calibration_key(source: Source, name: str) -> str:
    """What a calibration is valid for: the checkpoint's bytes, the estimator's code, and its extras' files
    (a retrained member or inverse net, or an edited estimator, invalidates it)."""
    est = get_estimator(name)
    h = hashlib.sha256(Path(source.checkpoint).read_bytes())
    h.update(est.description.encode() + est.fn.__code__.co_code)
    extras = [source.member(m) for m in range(1, ENSEMBLE_SIZE)] if "members" in est.needs else []
    extras += [source.inverse()] if "inverse" in est.needs else []
    extras += [source.paths.checkpoint(source.round - 1)] if "previous" in est.needs and source.round else []
    for p in extras:
        h.update(f"{p.name}:{p.stat().st_mtime_ns if p.is_file() else 0}".encode())
    return h.hexdigest()[:16]


def _member(path: Path, physics: Task | None, device: str) -> Member:
    from diffcurate.model.checkpoint import load_checkpoint, transform_of

    net, meta = load_checkpoint(path, physics, device)
    return Member(net, transform_of(meta), meta["model_config"])


# --- training the extras ------------------------------------------------------------------------------------


def _train_val(source: Source):
    """(train Dataset of the checkpoint's round: samples added at rounds <= k, val Dataset, the store's Task)."""
    from diffcurate.curate.store.lmdbstore import Store
    from diffcurate.model.data import dataset_from_configs

    with Store(source.paths.store, readonly=True) as st:
        idx = st.index()
        ids = idx[(idx["split"] == "train") & (idx["round"] <= source.round)]["id"].tolist()
        cfg, y, _ = st.get(ids)
        vcfg, vy, _ = st.get(st.ids("val"))
        ph = st.task
    return dataset_from_configs(ph, cfg, y), dataset_from_configs(ph, vcfg, vy), ph


def _train_member(source: Source, m: int, device: str, log: Log) -> None:
    from diffcurate.model.checkpoint import save_checkpoint
    from diffcurate.model.train import train

    cfg = load_checked_run(source.run_dir)
    train_set, val_set, ph = _train_val(source)
    tc = member_train_config(cfg, m)
    log(f"ensemble: training member {m} of round {source.round} ({len(train_set)} samples, {tc.epochs} epochs)")
    res = train(cfg.model, tc, train_set, val_set, physics=ph, device=device)
    save_checkpoint(source.member(m), res.model, cfg.model, tc, ph, metrics={"val": res.val_metrics}, member=m)


def _train_inverse(source: Source, device: str, log: Log) -> None:
    """The inverse net learns true y -> x on the round's train split (the trainer's items with x and y swapped)."""
    from diffcurate.model.checkpoint import save_checkpoint
    from diffcurate.model.data import ArrayDataset
    from diffcurate.model.train import train

    cfg = load_checked_run(source.run_dir)
    train_set, val_set, ph = _train_val(source)
    swap = lambda d: ArrayDataset(d.y, d.x, d.regions, d.strata, d.region_names)  # noqa: E731
    mc = inverse_model_config(ph.grid[0], ph.problem.channels)
    tc = replace(
        cfg.train,
        seed=cfg.seed + 7,
        loss="mse",
        weight="none",
        schedule="fixed",
        transform="none",
        epochs=max(cfg.train.epochs, INVERSE_MIN_EPOCHS),
    )
    log(f"inverse: training the inverse net of round {source.round} ({len(train_set)} samples, {tc.epochs} epochs)")
    res = train(mc, tc, swap(train_set), swap(val_set), physics=ph, device=device)
    save_checkpoint(source.inverse(), res.model, mc, tc, ph, metrics={"val": res.val_metrics})


def prepare(
    source: Source, names: list[str], device: str = "cpu", log: Log = lambda s: None, ensemble_size: int = ENSEMBLE_SIZE
) -> None:
    """Train the members / inverse net that `names` need and the run directory lacks (once per round)."""
    needs = {n for name in names for n in get_estimator(name).needs}
    if source.run_dir is None or not needs & {"members", "inverse"}:
        return
    if "members" in needs:
        for m in range(1, ensemble_size):
            if not source.member(m).is_file():
                _train_member(source, m, device, log)
    if "inverse" in needs and not source.inverse().is_file():
        _train_inverse(source, device, log)


def load_models(source: Source, device: str = "cpu", ensemble_size: int = ENSEMBLE_SIZE) -> Models:
    """The surrogate plus whatever extras exist for its round (missing ones stay empty; see `prepare`)."""
    from diffcurate.common.device import resolve_device
    from diffcurate.model.checkpoint import load_checkpoint, transform_of

    device = str(resolve_device(device))
    net, meta = load_checkpoint(source.checkpoint, device=device)
    if meta.get("physics") is None:
        raise InputError(f"{source.checkpoint}: the checkpoint records no physics")
    ph = task_of(meta.get("problem") or "diffusion", meta["physics"])
    model = Member(net, transform_of(meta), meta["model_config"])
    models = Models(ph, model, device=device)
    if source.run_dir is None:
        return models
    models.members = [
        _member(source.member(m), ph, device) for m in range(1, ensemble_size) if source.member(m).is_file()
    ]
    prev = source.paths.checkpoint(source.round - 1) if source.round else None
    models.previous = _member(prev, ph, device) if prev is not None and prev.is_file() else None
    models.inverse = _member(source.inverse(), ph, device) if source.inverse().is_file() else None
    return models


# --- calibration ------------------------------------------------------------------------------------------


def true_errors(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(n,) per-sample MAE (docs/formats.md: mean |y_hat - y| over all pixels), float64."""
    return np.abs(pred.astype(np.float64) - y.astype(np.float64)).reshape(len(y), -1).mean(1)


def _split(source: Source, split: str) -> tuple[Batch, np.ndarray]:
    """(configurations, y (n, C_out, H, W) float32) of a split of the run's store."""
    from diffcurate.curate.store.lmdbstore import Store

    with Store(source.paths.store, readonly=True) as st:
        cfg, y, _ = st.get(st.ids(split))
    return cfg, y[:, None]


def calibrate(source: Source, models: Models, name: str) -> Calibration:
    """Fit (or reuse, if fitted for this very checkpoint) the calibration of `name` on the val split."""
    est = check_available(name, models)
    if source.run_dir is None:
        return Calibration(name, "identity" if not est.calibrate else "uncalibrated", checkpoint=source.checkpoint.name)
    path, sha = source.calibration(name), _calibration_key(source, name)
    if path.is_file():
        cal = Calibration.load(path)
        if cal.key == sha:
            return cal
    cfg, y = _split(source, "val")
    x = models.task.encode(cfg)  # (n, C_in, H, W)
    pred = models.predict(x)
    raw = raw_estimate(name, models, cfg, x, pred).raw
    cal = fit(
        name,
        raw,
        true_errors(pred, y),
        "loglinear" if est.calibrate else "identity",
        checkpoint=source.checkpoint.name,
        key=sha,
    )
    cal.save(path)
    return cal


@dataclass
class Calibrated:
    """A ready estimator: models + calibration; `__call__` gives calibrated per-sample MAE estimates."""

    name: str
    models: Models
    calibration: Calibration

    def raw(self, configs: Batch, x: np.ndarray, pred: np.ndarray) -> np.ndarray:
        return raw_estimate(self.name, self.models, configs, x, pred).raw

    def __call__(self, configs: Batch, x: np.ndarray, pred: np.ndarray) -> np.ndarray:
        return self.calibration.apply(self.raw(configs, x, pred))  # (n,) MAE units


def load_estimator(
    path,
    name: str,
    device: str = "cpu",
    log: Log = lambda s: None,
    models: Models | None = None,
    source: Source | None = None,
) -> Calibrated:
    """Everything `name` needs for the checkpoint or run directory at `path`, prepared and calibrated."""
    get_estimator(name)
    source = source or resolve_source(path)
    if models is None or source.run_dir is not None:
        prepare(source, [name], device, log)
        models = load_models(source, device)
    check_available(name, models)
    return Calibrated(name, models, calibrate(source, models, name))


def score_candidates(
    run_dir_or_checkpoint, physics, configs: Batch, name: str, device: str = "cpu", log: Log = lambda s: None
) -> np.ndarray:
    """(n,) calibrated estimated per-sample MAE of the surrogate on unsolved candidates: the acquisition score
    of a ground-truth-free estimator (the loop's score step for acquisition != "true-error")."""
    if not get_estimator(name).ground_truth_free:
        raise InputError(f"estimator {name!r} needs solutions; it is no acquisition score")
    est = load_estimator(run_dir_or_checkpoint, name, device, log)
    task = as_task(physics)
    if (est.models.task.name, est.models.task.fingerprint()) != (task.name, task.fingerprint()):
        raise InputError(f"{run_dir_or_checkpoint}: checkpoint physics differ from the candidates' physics")
    x = task.encode(task.from_arrays(task.to_arrays(configs)))  # (n, C_in, H, W): configurations checked first
    return est(configs, x, est.models.predict(x))


# --- judging the estimators ---------------------------------------------------------------------------------


def evaluate_estimators(
    run_dir,
    names: list[str] | None = None,
    threshold: float | None = None,
    device: str = "cpu",
    log: Log = lambda s: None,
) -> dict:
    """Each estimator on the test split: Spearman with the true per-sample MAE (overall, per source count), AUROC
    of flagging samples whose error exceeds `threshold` (default: the val p90 of the true error), cost per sample.
    """
    source = resolve_source(run_dir)
    if source.run_dir is None:
        raise InputError(f"{run_dir}: estimate-eval needs a run directory (it reads the val and test splits)")
    names = list(names or ESTIMATORS)
    for n in names:
        get_estimator(n)
    prepare(source, names, device, log)
    models = load_models(source, device)
    vcfg, vy = _split(source, "val")
    val_err = true_errors(models.predict(models.task.encode(vcfg)), vy)
    thr = float(np.percentile(val_err, 90)) if threshold is None else float(threshold)
    cfg, y = _split(source, "test")
    x = models.task.encode(cfg)
    t0 = time.perf_counter()
    pred = models.predict(x)
    predict_ms = (time.perf_counter() - t0) * 1e3 / len(cfg)
    err = true_errors(pred, y)
    t0 = time.perf_counter()
    models.task.problem.solve(models.task.params, cfg)
    solve_ms = (time.perf_counter() - t0) * 1e3 / len(cfg)
    strata = models.task.strata(cfg)
    rows: dict[str, dict] = {}
    for name in names:
        try:
            check_available(name, models)
        except InputError as e:
            rows[name] = {"available": False, "why": str(e)}
            continue
        cal = calibrate(source, models, name)
        t0 = time.perf_counter()
        raw = raw_estimate(name, models, cfg, x, pred).raw
        ms = (time.perf_counter() - t0) * 1e3 / len(cfg)
        estimate = cal.apply(raw)
        by = {str(k): spearman(raw[strata == k], err[strata == k]) for k in np.unique(strata)}
        ratio = np.log(np.maximum(err, 1e-12)) - np.log(np.maximum(estimate, 1e-12))
        rows[name] = {
            "available": True,
            "spearman": spearman(raw, err),
            "spearman_by_sources": by,
            "auroc": auroc(raw, err > thr),
            "ms_per_sample": ms,
            "calibration": cal.method,
            "val_slack": cal.slack,
            "test_slack": float(np.exp(ratio.max())),
            "test_within_2x": float(np.mean(np.abs(ratio) <= np.log(2))),
        }
    return {
        "run": str(source.run_dir),
        "checkpoint": source.checkpoint.name,
        "n_test": len(cfg),
        "threshold": thr,
        "threshold_from": "val p90" if threshold is None else "given",
        "flagged": int((err > thr).sum()),
        "true_mae": {"mean": float(err.mean()), "max": float(err.max())},
        "predict_ms_per_sample": predict_ms,
        "solve_ms_per_sample": solve_ms,
        "estimators": rows,
    }
