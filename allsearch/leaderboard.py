"""MLflow runs -> pandas -> a ranked table in the paper's column order.

One code path for every source of runs (the Optuna engine, the KerasTuner engine, table1):
all of them log the same params and metric names (DESIGN.md), and this module reads only those.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import numpy as np
import pandas as pd

from allsearch.space import HParams

__all__ = ["study_table", "render", "PAPER_BEST", "FORMATS", "METRIC_COLUMNS"]

FORMATS = ("markdown", "csv", "html", "latex", "json")
Format = Literal["markdown", "csv", "html", "latex", "json"]
# The paper's best row of Table 1 (one run each): the reference of the difference columns.
PAPER_BEST = {"val_accuracy": 0.80, "test_accuracy": 0.82}
# (metric name, column title) in the paper's order, then ours.
METRIC_COLUMNS = (
    ("val_accuracy", "Validation Accuracy"),
    ("val_prediction_time_s", "Validation Prediction Time (s)"),
    ("test_accuracy", "Test Accuracy"),
    ("test_prediction_time_s", "Test Prediction Time (s)"),
    ("latency_ms_p50", "Latency p50 (ms)"),
    ("epochs_run", "Epochs Run"),
)


def study_table(tracker: Any, parent_id: str) -> pd.DataFrame:
    """One row per child run of a study's parent run, best validation accuracy first."""
    runs = tracker.runs_frame(f"tags.`mlflow.parentRunId` = '{parent_id}'")
    return runs_to_table(runs)


def runs_to_table(runs: pd.DataFrame) -> pd.DataFrame:
    if runs.empty:
        return pd.DataFrame()
    table = pd.DataFrame()
    for name in HParams.names():
        column = f"params.{name}"
        if column in runs:
            table[name] = runs[column].map(_number)
    for metric, title in METRIC_COLUMNS:
        column = f"metrics.{metric}"
        table[title] = runs[column].astype(float) if column in runs else np.nan
    table["State"] = runs.get("tags.state", pd.Series("", index=runs.index))
    table["Trial"] = runs.get("params.trial_number", pd.Series("", index=runs.index))
    table["Run ID"] = runs["run_id"]
    table["Δ Val vs paper"] = table["Validation Accuracy"] - PAPER_BEST["val_accuracy"]
    table["Δ Test vs paper"] = table["Test Accuracy"] - PAPER_BEST["test_accuracy"]
    table = table.sort_values("Validation Accuracy", ascending=False, na_position="last")
    return table.reset_index(drop=True)


def _number(value: Any) -> Any:
    """MLflow stores params as text; give numbers back their type."""
    if not isinstance(value, str):
        return value
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            continue
    return value


def render(table: pd.DataFrame, fmt: Format = "markdown", *, digits: int = 3) -> str:
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt == "json":
        return json.dumps(json.loads(table.to_json(orient="records")), indent=2)
    shown = table.copy()
    for column in shown.columns:
        if shown[column].dtype.kind == "f":
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.{digits}f}")
    if fmt == "html":
        return shown.to_html(index=False, border=0)
    if fmt == "latex":
        return shown.to_latex(index=False)
    return _markdown(shown)


def _markdown(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *rows])
