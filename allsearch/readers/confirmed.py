"""A study's confirmations read back beside its search (the leaderboard's Confirmed columns).

`python -m allsearch.confirm` re-trains a study's best configurations on fresh seeds and
splits, of the study's split kind or of another (`--split blocks ...`). Every confirmation of
a study is a parent run tagged `allsearch.confirms=<study>`; their runs are read together and
each configuration's test accuracy is summarized per split (mean ± sd, 95% interval, n): a
mean never mixes two kinds of split, and every confirmed figure names its split.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from allsearch.core.contract import CONFIRMS, ROLE, STATE, STUDY
from allsearch.core.space import HParams
from allsearch.core.splits import FIELDS, label_of
from allsearch.readers.tables import SD

__all__ = ["CONFIRMED", "mean_interval", "split_labels", "with_confirmation",
           "confirmation_runs"]

CONFIRMED = "Confirmed Test"


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


def split_labels(runs: pd.DataFrame) -> list[str]:
    """Each run's split as tables show it (splits.SplitSettings.label), from its params."""
    return [label_of({name: run.get(f"params.{name}") for name in FIELDS})
            for run in runs.to_dict("records")]


def with_confirmation(table: pd.DataFrame, runs: pd.DataFrame,
                      confirmed: pd.DataFrame) -> pd.DataFrame:
    """The study's table with, beside each configuration's search figures, its test accuracy
    on the fresh seeds and splits of its confirmations (python -m allsearch.confirm): mean ±
    sd, 95% interval and n, one group of columns per split. Those of the table's own split
    are `Confirmed Test`, `Confirmed Test SD`, `Confirmed 95% CI`, `Confirmed n`; another
    split's carry its label, e.g. `Confirmed Test (blocks 50, embargo 5)`. Confirmed
    configurations rank first, by the mean of the first group."""
    if table.empty or confirmed.empty:
        return table
    done = confirmed[confirmed.get(f"tags.{STATE}") == "COMPLETE"]
    by_key: dict[tuple[str, str], list[float]] = {}
    for (_, run), label in zip(done.iterrows(), split_labels(done), strict=True):
        by_key.setdefault((_key(run), label), []).append(run["metrics.test_accuracy"])
    own = table["Split"].mode().iloc[0] if "Split" in table else "random"
    labels = sorted({label for _, label in by_key}, key=lambda s: (s != own, s)) or [own]
    runs_by_id = runs.set_index("run_id")
    keys = [_key(runs_by_id.loc[row["Run ID"]])
            if row["State"] == "COMPLETE" and row["Run ID"] in runs_by_id.index else None
            for _, row in table.iterrows()]
    table = table.copy()
    at = table.columns.get_loc("Test Accuracy SD") + 1
    for label in labels:
        suffix = "" if label == own else f" ({label})"
        stats = [mean_interval(by_key.get((key, label), []) if key else []) for key in keys]
        for column, values in (
                (CONFIRMED + suffix, [s[0] for s in stats]),
                (CONFIRMED + suffix + SD, [s[1] for s in stats]),
                ("Confirmed 95% CI" + suffix,
                 [f"[{s[2]:.3f}, {s[3]:.3f}]" if s[4] > 1 else "" for s in stats]),
                ("Confirmed n" + suffix, [s[4] for s in stats])):
            table.insert(at, column, values)
            at += 1
    first = "" if labels[0] == own else f" ({labels[0]})"
    table["_rank"] = [0 if state == "COMPLETE" and n else (1 if state == "COMPLETE" else 2)
                      for state, n in zip(table["State"], table["Confirmed n" + first], strict=True)]
    table["_value"] = table[CONFIRMED + first].where(table["_rank"] == 0,
                                                     table["Validation Accuracy"])
    table = table.sort_values(["_rank", "_value"], ascending=[True, False], na_position="last")
    return table.drop(columns=["_rank", "_value"]).reset_index(drop=True)


def _key(run: pd.Series) -> str:
    return json.dumps(HParams.from_params(run).to_dict(), sort_keys=True)


def confirmation_runs(study: str, *, tracking_uri: str | None = None) -> pd.DataFrame:
    """The runs of every confirmation of the study (parent runs tagged `allsearch.confirms`
    with its name, or named `<study>-confirm`), or an empty frame."""
    from allsearch.tracking.store import open_client, runs_of_parent

    client = open_client(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    parents: dict[str, None] = {}
    for query in (f"tags.`{CONFIRMS}` = '{study}'", f"tags.`{STUDY}` = '{study}-confirm'"):
        for run in client.search_runs(experiments, filter_string=f"{query} and "
                                                                 f"tags.`{ROLE}` = 'parent'"):
            parents[run.info.run_id] = None
    frames = [runs_of_parent(parent, tracking_uri=tracking_uri) for parent in parents]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
