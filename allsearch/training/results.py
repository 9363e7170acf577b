"""What one training run produced: plain values (and the trained model), no Keras import.

allsearch.training.trial.run_trial makes a TrialResult; tracking, the recorder and the engines read it.
`aggregate` is the mean (and sd) of several results: repeats over seeds, or --cv's folds.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from allsearch.core.contract import RECALL_PREFIX
from allsearch.core.space import HParams

__all__ = ["TrialResult", "recall_metric", "aggregate"]


@dataclass
class TrialResult:
    """Everything one training run produced; plain values only (and the trained model)."""

    hparams: HParams
    seed: int
    class_names: tuple[str, ...]
    history: dict[str, list[float]]
    epochs_run: int
    train_time_s: float
    val_accuracy: float
    test_accuracy: float
    val_prediction_time_s: float
    test_prediction_time_s: float
    latency_ms_p50: float
    latency_ms_p95: float
    y_test: np.ndarray
    test_probabilities: np.ndarray
    test_files: tuple[str, ...]
    precision: str = "float32"
    kept_epoch: int = 0  # the epoch (1-based) whose weights were evaluated
    n_params: int = 0  # the network's weights, trainable or not
    model_size_mb: float = 0.0  # their size as stored (MiB)
    model: Any = field(default=None, repr=False)  # the trained keras.Model, when kept
    # Seconds per stage of the run (time_build_s, time_fit_s, time_evaluate_s).
    timings: dict[str, float] = field(default_factory=dict)
    summary: str = ""  # Keras' summary of the network (network_summary.txt on the run)

    @property
    def test_predictions(self) -> np.ndarray:
        return self.test_probabilities.argmax(axis=1)

    @property
    def collapsed(self) -> bool:
        """Did the network predict one class for every test image (a degenerate fit)?"""
        return len(self.y_test) > 1 and len(np.unique(self.test_predictions)) == 1

    def confusion(self) -> np.ndarray:
        from sklearn.metrics import confusion_matrix

        return confusion_matrix(self.y_test, self.test_predictions,
                                labels=list(range(len(self.class_names))))

    def per_class_report(self) -> dict[str, Any]:
        from sklearn.metrics import classification_report

        return classification_report(self.y_test, self.test_predictions,
                                     labels=list(range(len(self.class_names))),
                                     target_names=list(self.class_names), output_dict=True,
                                     zero_division=0)

    def final_metrics(self) -> dict[str, float]:
        """The final metrics under their contract names (docs/design.md)."""
        return {
            "val_accuracy": self.val_accuracy,
            "test_accuracy": self.test_accuracy,
            "val_prediction_time_s": self.val_prediction_time_s,
            "test_prediction_time_s": self.test_prediction_time_s,
            "latency_ms_p50": self.latency_ms_p50,
            "latency_ms_p95": self.latency_ms_p95,
            "epochs_run": float(self.epochs_run),
            "kept_epoch": float(self.kept_epoch or self.epochs_run),
            "train_time_s": self.train_time_s,
            "n_params": float(self.n_params),
            "model_size_mb": self.model_size_mb,
            **self.timings,
            **self.recalls(),
        }

    def recalls(self) -> dict[str, float]:
        """Test recall per class (a class absent from the test split has none)."""
        matrix = self.confusion()
        return {recall_metric(name): float(matrix[i, i] / matrix[i].sum())
                for i, name in enumerate(self.class_names) if matrix[i].sum()}


def recall_metric(class_name: str) -> str:
    """The metric name of one class's test recall; characters MLflow refuses in a metric name
    (it takes ASCII letters, digits, `_ - . /` and spaces) become `_`."""
    return RECALL_PREFIX + re.sub(r"[^0-9A-Za-z_\-. /]", "_", class_name)


def aggregate(results: Sequence[TrialResult]) -> dict[str, float]:
    """Final metrics averaged over repeats (or folds), with the spread of the accuracies and
    recalls; `repeats`: how many results."""
    per_run = [r.final_metrics() for r in results]
    # A class can be missing from a test split, so a recall may be missing from a run.
    names = dict.fromkeys(k for m in per_run for k in m)
    metrics = {k: statistics.fmean(m[k] for m in per_run if k in m) for k in names}
    if len(results) > 1:
        for name in names:
            values = [m[name] for m in per_run if name in m]
            if (name.endswith("_accuracy") or name.startswith(RECALL_PREFIX)) and len(values) > 1:
                metrics[f"{name}_sd"] = statistics.stdev(values)
        metrics["repeats"] = float(len(results))
    return metrics
