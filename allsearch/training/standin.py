"""A stand-in for training, for load tests of the study loop: `--trainer standin:SECONDS`.

It sleeps SECONDS per trial (spread over the trial's epochs), reports every epoch like a real
fit (to the curves, the pruner and the progress line) and returns a synthetic TrialResult, so
sampling, trial states, heartbeats, the MLflow layout and logging run for real while no model
trains and no Keras or TensorFlow is imported. What it measures is coordination, not training.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from allsearch.core.hardware import deferred_interrupts
from allsearch.core.space import HParams
from allsearch.data.dataset import Dataset
from allsearch.training.results import TrialResult

__all__ = ["stand_in", "PruningReporter"]

def _score(hparams: HParams, seed: int, epoch: int) -> float:
    """A deterministic, configuration-dependent accuracy that rises with the epochs."""
    digest = hashlib.sha256(f"{sorted(hparams.to_dict().items())}|{seed}".encode()).digest()
    ceiling = 0.5 + 0.45 * digest[0] / 255
    return float(ceiling * (1 - 0.5 ** (epoch + 1)))


def stand_in(seconds: float) -> Callable[..., TrialResult]:
    """A function with allsearch.training.trial.run_trial's signature that trains nothing."""

    def run(dataset: Dataset, hparams: HParams, *, seed: int = 0, precision: str = "float32",
            callbacks: Sequence[Any] = (),
            on_epoch: Callable[[int, dict[str, float]], None] | None = None,
            keep_model: bool = True, history: dict[str, list[float]] | None = None,
            factory: Any = None) -> TrialResult:
        history = {} if history is None else history
        started = time.perf_counter()
        for epoch in range(hparams.epochs):
            time.sleep(seconds / hparams.epochs)
            accuracy = _score(hparams, seed, epoch)
            values = {"loss": 1 - accuracy, "accuracy": accuracy, "val_loss": 1 - accuracy,
                      "val_accuracy": accuracy}
            for name, value in values.items():
                history.setdefault(name, []).append(value)
            if on_epoch is not None:
                on_epoch(epoch, values)
            with deferred_interrupts():  # a pruner's report is written whole
                for callback in callbacks:  # a pruner's callback may raise TrialPruned here
                    callback.on_epoch_end(epoch, values)
        accuracy = history["val_accuracy"][-1]
        n = len(dataset.y_test)
        rng = np.random.default_rng(seed)
        probabilities = rng.dirichlet(np.ones(dataset.n_classes), size=n).astype(np.float32)
        right = rng.random(n) < accuracy
        probabilities[right] = np.eye(dataset.n_classes, dtype=np.float32)[dataset.y_test[right]]
        return TrialResult(
            hparams=hparams, seed=seed, class_names=dataset.class_names, history=history,
            epochs_run=hparams.epochs, train_time_s=time.perf_counter() - started,
            val_accuracy=accuracy, test_accuracy=float((probabilities.argmax(1) == dataset.y_test).mean()),
            val_prediction_time_s=0.0, test_prediction_time_s=0.0, latency_ms_p50=0.0,
            latency_ms_p95=0.0, y_test=dataset.y_test, test_probabilities=probabilities,
            test_files=dataset.files_test, precision=precision)

    return run


class PruningReporter:
    """What optuna-integration's KerasPruningCallback does at an epoch's end, for a stand-in
    that has no Keras: report val_accuracy, and stop the trial when the pruner says so."""

    def __init__(self, trial: Any, monitor: str = "val_accuracy") -> None:
        self.trial = trial
        self.monitor = monitor

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        import optuna

        self.trial.report(float(logs[self.monitor]), step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"Trial was pruned at epoch {epoch}.")
