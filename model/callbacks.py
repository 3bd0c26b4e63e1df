"""Hooks of the trainer's epoch loop, as neuraloperator's Trainer has them: what watches a training (a progress
bar, the cluster's gauges, a test's fault) is a callback, not a branch of the loop. The trainer calls them on
rank 0 only, after each epoch's checkpoint is saved."""

from __future__ import annotations

from collections.abc import Callable


class Callback:
    def on_train_start(self, total_epochs: int, done_epochs: int) -> None:
        """Before the first epoch (`done_epochs` > 0 when a run resumes)."""

    def on_epoch_end(self, record: dict) -> None:
        """After an epoch, its record written (raising here simulates a kill)."""

    def on_train_end(self) -> None:
        """When the loop ends, also when it raises."""


class EachEpoch(Callback):
    """fn(epoch, record) after each epoch."""

    def __init__(self, fn: Callable[[int, dict], None]):
        self.fn = fn

    def on_epoch_end(self, record: dict) -> None:
        self.fn(record["epoch"], record)


class ProgressBar(Callback):
    """A rich bar on stderr: the epoch, its loss and val MAE."""

    def on_train_start(self, total_epochs: int, done_epochs: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=Console(stderr=True)
        )
        self.task = self.bar.add_task("training", total=total_epochs, completed=done_epochs)
        self.bar.start()

    def on_epoch_end(self, record: dict) -> None:
        val = record.get("val_mae", float("nan"))
        text = f"epoch {record['epoch'] + 1} loss {record['loss']:.3g} val {val:.3g}"
        self.bar.update(self.task, advance=1, description=text)

    def on_train_end(self) -> None:
        self.bar.stop()
