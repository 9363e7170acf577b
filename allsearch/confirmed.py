"""A study's confirmation (python -m allsearch.confirm) beside its search: each configuration's
test accuracy on the fresh seeds and splits, mean ± sd, 95% interval and n, in the leaderboard."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from allsearch.contract import STATE
from allsearch.hparams import HParams
from allsearch.tables import SD

__all__ = ["mean_interval", "with_confirmation", "confirmation_runs", "CONFIRMED"]


def mean_interval(values: Any) -> tuple[float, float, float, float, int]:
    """(mean, sd, 95% t-interval low, high, n) of accuracies; the interval is clipped to
    [0, 1] and NaN for fewer than two values."""
    from scipy import stats

    values = [float(v) for v in values if v == v]
    n = len(values)
    if not n:
        return math.nan, math.nan, math.nan, math.nan, 0
    mean = float(np.mean(values))
    if n < 2:
        return mean, math.nan, math.nan, math.nan, n
    sd = float(np.std(values, ddof=1))
    half = float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))
    return mean, sd, max(0.0, mean - half), min(1.0, mean + half), n


CONFIRMED = "Confirmed Test"


def with_confirmation(table: pd.DataFrame, runs: pd.DataFrame,
                      confirmed: pd.DataFrame) -> pd.DataFrame:
    """The study's table with, beside each configuration's search figures, its test accuracy
    on the fresh seeds and splits of its confirmation (python -m allsearch.confirm): mean ± sd,
    95% interval and n. Confirmed configurations rank first, by that mean."""
    if table.empty or confirmed.empty:
        return table

    def key(run: pd.Series) -> str:
        return json.dumps(HParams.from_params(run).to_dict(), sort_keys=True)

    done = confirmed[confirmed.get(f"tags.{STATE}") == "COMPLETE"]
    by_key: dict[str, list[float]] = {}
    for _, run in done.iterrows():
        by_key.setdefault(key(run), []).append(run["metrics.test_accuracy"])
    runs_by_id = runs.set_index("run_id")
    stats = []
    for _, row in table.iterrows():
        values = (by_key.get(key(runs_by_id.loc[row["Run ID"]]), [])
                  if row["State"] == "COMPLETE" and row["Run ID"] in runs_by_id.index else [])
        stats.append(mean_interval(values))
    table = table.copy()
    at = table.columns.get_loc("Test Accuracy SD") + 1
    for offset, (column, values) in enumerate((
            (CONFIRMED, [s[0] for s in stats]), (CONFIRMED + SD, [s[1] for s in stats]),
            ("Confirmed 95% CI", [f"[{s[2]:.3f}, {s[3]:.3f}]" if s[4] > 1 else "" for s in stats]),
            ("Confirmed n", [s[4] for s in stats]))):
        table.insert(at + offset, column, values)
    table["_rank"] = [0 if state == "COMPLETE" and n else (1 if state == "COMPLETE" else 2)
                      for state, n in zip(table["State"], table["Confirmed n"], strict=True)]
    table["_value"] = table[CONFIRMED].where(table["_rank"] == 0, table["Validation Accuracy"])
    table = table.sort_values(["_rank", "_value"], ascending=[True, False], na_position="last")
    return table.drop(columns=["_rank", "_value"]).reset_index(drop=True)


def confirmation_runs(study: str, *, tracking_uri: str | None = None) -> pd.DataFrame:
    """The runs of the study's confirmation (`<study>-confirm`), or an empty frame."""
    from allsearch.errors import StoreError
    from allsearch.tracking import find_study_parent, runs_of_parent

    try:
        _, parent = find_study_parent(f"{study}-confirm", tracking_uri=tracking_uri)
    except StoreError:
        return pd.DataFrame()
    return runs_of_parent(parent, tracking_uri=tracking_uri)
