"""Figures and tables made from results: pure functions, no tracking and no training.

Figures are `matplotlib.figure.Figure` objects, not pyplot's: they need no backend, so making
one selects none in the caller's process and works in any thread; saving renders with Agg.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["confusion_figure", "curves_figure", "predictions_csv", "plot_figure"]


def plot_figure(axes: Axes, width: float, height: float) -> Figure:
    """The figure a plotting function drew `axes` on (Optuna's plots return their Axes),
    sized and laid out for saving."""
    figure = axes.get_figure(root=True)
    if figure is None:
        raise ValueError("the plot drew on no figure")
    figure.set_size_inches(width, height)
    figure.tight_layout()
    return figure


def confusion_figure(matrix: np.ndarray, class_names: Sequence[str], *, title: str = "") -> Figure:
    fig = Figure(figsize=(4.8, 4.2), dpi=100)
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(class_names)), labels=class_names, rotation=30)
    ax.set_yticks(range(len(class_names)), labels=class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = matrix.max() if matrix.size else 0
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center",
                color="white" if value > top / 2 else "black")
    ax.set_title(title or "test confusion matrix")
    fig.tight_layout()
    return fig


def curves_figure(history: dict[str, list[float]], *, title: str = "") -> Figure:
    fig = Figure(figsize=(9, 3.6), dpi=100)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, metric in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        for prefix, style in (("", "-o"), ("val_", "--s")):
            values = history.get(prefix + metric, [])
            if values:
                ax.plot(range(1, len(values) + 1), values, style, markersize=3,
                        label="train" if not prefix else "validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title or "learning curves")
    fig.tight_layout()
    return fig


def predictions_csv(files: Sequence[str], y_true: np.ndarray, probabilities: np.ndarray,
                    class_names: Sequence[str]) -> str:
    frame = pd.DataFrame({"file": list(files),
                          "true": [class_names[i] for i in y_true],
                          "predicted": [class_names[i] for i in probabilities.argmax(1)]})
    for i, name in enumerate(class_names):
        frame[f"p_{name}"] = probabilities[:, i].round(6)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return buffer.getvalue()
