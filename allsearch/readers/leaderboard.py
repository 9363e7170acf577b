"""MLflow runs -> pandas -> a ranked table in the paper's column order.

One code path for every source of runs (the Optuna engine, the KerasTuner engine, table1): all
of them log the same params and metric names (DESIGN.md), and this module reads only those.
Every row names its split (column Split: random, groups PATTERN, blocks N, embargo M), and runs
of two splits are never one row; a study's confirmations sit beside it per split
(allsearch.readers.confirmed).
`python -m allsearch.leaderboard [--study NAME] [--format ...] [--top K] [--out FILE]`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from allsearch.core.contract import (
    BUILT_IN_MODEL,
    COLLAPSED,
    MODEL_FACTORY,
    MODEL_KNOBS,
    MODEL_URI,
    PAPER_TABLE1_BEST,
    RECALL_PREFIX,
    Store,
)
from allsearch.core.errors import ConfigError, first_line
from allsearch.core.hparams import knobs_from_text
from allsearch.core.objectives import FEASIBLE
from allsearch.core.space import HParams, fixed_space_text
from allsearch.readers.confirmed import split_labels
from allsearch.readers.tables import FORMATS, SD, markdown, render

__all__ = ["meeting_constraints", "complete_configurations", "sort_by_first_objective", "study_table", "runs_to_table", "render", "load_study_runs", "filter_runs", "best_configuration",
           "save_best_space", "PAPER_BEST", "FORMATS", "METRIC_COLUMNS", "markdown",
           "write_output"]

# The paper's best row of Table 1 (one run): the reference of the difference columns.
PAPER_BEST = PAPER_TABLE1_BEST
# The paper's four knobs always show; other hyperparameters show when they vary.
PAPER_KNOBS = ("epochs", "batch_size", "loss", "conv_layers")
# (metric name, column title) in the paper's order, then ours.
METRIC_COLUMNS = (
    ("val_accuracy", "Validation Accuracy"),
    ("val_prediction_time_s", "Validation Prediction Time (s)"),
    ("test_accuracy", "Test Accuracy"),
    ("test_prediction_time_s", "Test Prediction Time (s)"),
    ("latency_ms_p50", "Latency p50 (ms)"),
    ("n_params", "Parameters"),
    ("train_time_s", "Train Time (s)"),
    ("epochs_run", "Epochs Run"),
)
# Columns whose spread over seeds is shown as mean ± sd (and every per-class recall).
SPREAD = ("Validation Accuracy", "Test Accuracy")
# Per-class test recall metrics (RECALL_PREFIX + class) are shown as "Recall <class>".
RECALL_TITLE = "Recall "
# The columns a trial that did not complete leaves blank (all but Epochs Run of the metrics).
RESULT_PREFIXES = ("Validation ", "Test ", "Latency ", "Train ", RECALL_TITLE, "Δ ")


def meeting_constraints(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs that meet every constraint of their study (all of them where it had none):
    the runs a study's champion and the configurations to confirm are chosen from."""
    if f"tags.{FEASIBLE}" not in runs:
        return runs
    return runs[runs[f"tags.{FEASIBLE}"] != "false"]


def complete_configurations(runs: pd.DataFrame, purpose: str) -> pd.DataFrame:
    """The leaderboard rows of the complete configurations meeting the study's constraints,
    best first; a ConfigError naming `purpose` (e.g. "to confirm") where there is none."""
    feasible = meeting_constraints(runs)
    table = runs_to_table(feasible)
    complete = table[table["State"] == "COMPLETE"] if len(table) else table
    if complete.empty:
        unmet = " that meets its constraints" if len(feasible) < len(runs) else ""
        raise ConfigError(f"the study has no complete trial{unmet} {purpose}; run it (or let "
                          f"it finish) first")
    return complete


def study_table(tracker: Store, parent_id: str) -> pd.DataFrame:
    """The ranked table of one study's child runs."""
    return runs_to_table(tracker.runs_frame(f"tags.`mlflow.parentRunId` = '{parent_id}'"))


def runs_to_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per trial, or one per configuration (mean and sd) where it ran over seeds.

    Complete runs of the same hyperparameters, data variant and split are one configuration; a run
    logged with --repeats already holds its own mean and sd. Its Run ID is the run that holds
    the model (tag MODEL_URI) where one does, else its earliest run. Pruned, failed, killed
    and running trials keep a row each (state, trial, run, epochs run), so nothing disappears
    from the table, but no accuracy, time or difference to the paper: what they logged before
    they stopped is not a result.
    """
    if runs.empty:
        return pd.DataFrame()
    knobs = _knobs(runs)  # of a network of one's own: configurations differ by them too
    flat = _flatten(runs, knobs)
    factories = runs.get(f"params.{MODEL_FACTORY}", pd.Series(BUILT_IN_MODEL, index=runs.index))
    # A network of one's own shows its knobs; conv_layers is the paper's network's.
    always = PAPER_KNOBS if (factories.fillna(BUILT_IN_MODEL) == BUILT_IN_MODEL).any() else (
        *[k for k in PAPER_KNOBS if k != "conv_layers"], *knobs)
    hp = [h for h in [*HParams.names(), *knobs] if h in flat
          and (h in always or flat[h].nunique() > 1)]
    keys = hp + (["Variant"] if flat["Variant"].nunique() > 1 else []) + ["Split"]
    # Oldest first, so that of configurations equally good the earliest ranks first (the
    # trial Optuna calls best, the one registered as champion) in every table and confirm.
    flat = flat.sort_values("_start", kind="stable")
    complete = flat[flat["State"] == "COMPLETE"]
    other = flat[flat["State"] != "COMPLETE"]
    metric_columns = METRIC_COLUMNS + tuple(
        (m, RECALL_TITLE + m[len(RECALL_PREFIX):]) for m in _recall_metrics(runs))
    spread = SPREAD + tuple(title for m, title in metric_columns if m.startswith(RECALL_PREFIX))
    rows = [_group_row(group, keys, metric_columns, spread)
            for _, group in complete.groupby(keys, dropna=False, sort=False)]
    rows += [_unfinished_row(_group_row(other.loc[[i]], keys, metric_columns, spread))
             for i in other.index]
    table = pd.DataFrame(rows)
    columns = keys + [c for _, title in metric_columns for c in
                      ((title, title + SD) if title in spread else (title,))]
    columns += ["n", "State", "Trial", "Run ID", "Δ Val vs paper", "Δ Test vs paper"]
    if table["Collapsed"].fillna(0).any():
        # Runs that predicted one class for every test image (a degenerate fit), per row.
        columns.insert(columns.index("State"), "Collapsed")
    table = table.reindex(columns=columns)
    # Complete results first, best validation accuracy first; then pruned, failed, running.
    table["_unfinished"] = table["State"] != "COMPLETE"
    table = table.sort_values(["_unfinished", "Validation Accuracy"], ascending=[True, False],
                              na_position="last").drop(columns="_unfinished")  # stable on ties: oldest first
    return table.reset_index(drop=True)


def _knobs(runs: pd.DataFrame) -> pd.DataFrame:
    """Each run's knobs of a network of its own (MODEL_KNOBS), a column per knob."""
    texts = runs.get(f"params.{MODEL_KNOBS}", pd.Series(dtype=object))
    return pd.DataFrame([knobs_from_text(t) if isinstance(t, str) and t else {}
                         for t in texts.reindex(runs.index)], index=runs.index)


def _flatten(runs: pd.DataFrame, knobs: pd.DataFrame) -> pd.DataFrame:
    flat = pd.DataFrame(index=runs.index)
    for name in HParams.names():
        if f"params.{name}" in runs:
            flat[name] = runs[f"params.{name}"].map(_number)
    for name in knobs:
        flat[name] = knobs[name]
    flat["Variant"] = runs.get("params.variant", pd.Series("", index=runs.index)).fillna("")
    flat["Split"] = split_labels(runs)  # a mean never mixes two kinds of split
    for metric in [m for m, _ in METRIC_COLUMNS] + _recall_metrics(runs):
        for suffix in ("", "_sd"):
            column = f"metrics.{metric}{suffix}"
            flat[metric + suffix] = runs[column].astype(float) if column in runs else np.nan
    flat["repeats"] = runs["metrics.repeats"].astype(float) if "metrics.repeats" in runs else np.nan
    flat["State"] = runs.get("tags.state", pd.Series("", index=runs.index)).fillna("")
    flat["Trial"] = runs.get("params.trial_number", pd.Series("", index=runs.index)).fillna("")
    flat["Run ID"] = runs["run_id"]
    model = runs.get(f"tags.{MODEL_URI}", pd.Series("", index=runs.index))
    flat["_has_model"] = [isinstance(m, str) and bool(m) for m in model]
    # MLflow lists the newest run first; a configuration's first run is its earliest.
    flat["_start"] = runs["start_time"] if "start_time" in runs else range(len(runs))
    # What makes two runs of one configuration independent repeats rather than re-runs.
    flat["_seed"] = [f"{a}/{b}" for a, b in zip(runs.get("params.seed", pd.Series("", index=runs.index)),
                                               runs.get("params.split_seed", pd.Series("", index=runs.index)),
                                               strict=True)]
    collapsed = runs.get(f"tags.{COLLAPSED}", pd.Series("", index=runs.index))
    flat["_collapsed"] = (collapsed == "true").astype(int)
    return flat


def _recall_metrics(runs: pd.DataFrame) -> list[str]:
    """The per-class recall metrics MLflow's frame holds, by name."""
    prefix = "metrics." + RECALL_PREFIX
    return sorted(c[len("metrics."):] for c in runs.columns
                  if c.startswith(prefix) and not c.endswith("_sd"))


def _group_row(group: pd.DataFrame, keys: list[str], metric_columns: tuple[tuple[str, str], ...],
               spread: tuple[str, ...]) -> dict[str, Any]:
    trials = ",".join(sorted((str(t) for t in group["Trial"]),
                             key=lambda t: (0, int(t)) if t.isdigit() else (1, t)))
    # Oldest run first (runs_to_table ordered them).
    # The run that holds the model (a copy of a configuration, tag duplicate_of, holds none).
    linked = group[group["_has_model"]].iloc[0] if group["_has_model"].any() else group.iloc[0]
    # A sampler may propose a configuration again; with the same seed that run is a copy,
    # not a repeat, so only one run per seed counts towards mean, sd and n.
    group = group.drop_duplicates("_seed")
    first = group.iloc[0]
    row: dict[str, Any] = {k: first[k] for k in keys}
    n_runs = len(group)
    for metric, title in metric_columns:
        values = group[metric].dropna()
        row[title] = float(values.mean()) if len(values) else math.nan
        if title in spread:
            if n_runs > 1:
                row[title + SD] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
            else:
                row[title + SD] = float(first[metric + "_sd"])
    repeats = first["repeats"]
    row["n"] = n_runs if n_runs > 1 else (int(repeats) if repeats == repeats else 1)
    row["State"] = first["State"]
    row["Trial"] = trials if len(trials) <= 20 else f"{trials.count(',') + 1} runs"
    row["Run ID"] = linked["Run ID"]
    row["Collapsed"] = int(group["_collapsed"].sum())
    row["Δ Val vs paper"] = row["Validation Accuracy"] - PAPER_BEST["val_accuracy"]
    row["Δ Test vs paper"] = row["Test Accuracy"] - PAPER_BEST["test_accuracy"]
    return row


def pareto_runs(study: str, runs: pd.DataFrame, *, tracking_uri: str | None = None
                ) -> pd.DataFrame:
    """The runs on the study's Pareto front (tag pareto_front=true)."""
    column = runs.get("tags.pareto_front")
    if column is None or not (column == "true").any():
        raise ConfigError(f"study '{study}' has no Pareto front: it has one objective, or no "
                          f"complete trial yet (a front needs --objectives A B)")
    return runs[column == "true"]


def _objectives_of(study: str, *, tracking_uri: str | None = None) -> list[str]:
    from allsearch.tracking.store import find_study_parent, open_client

    _, parent = find_study_parent(study, tracking_uri=tracking_uri)
    text = open_client(tracking_uri).get_run(parent).data.params.get("objectives", "[]")
    return json.loads(text) if text.startswith("[") else [text]


def sort_by_first_objective(table: pd.DataFrame, study: str, *,
                             tracking_uri: str | None = None) -> pd.DataFrame:
    from allsearch.core.objectives import DIRECTIONS

    objectives = _objectives_of(study, tracking_uri=tracking_uri) or ["val_accuracy"]
    titles = dict(METRIC_COLUMNS)
    first = objectives[0]
    column = titles.get(first)
    if column is None or column not in table:
        return table
    return table.sort_values(column, ascending=DIRECTIONS.get(first) == "minimize").reset_index(drop=True)


def _unfinished_row(row: dict[str, Any]) -> dict[str, Any]:
    """A trial that did not complete: its row without results (Epochs Run says how far it got)."""
    return {column: (math.nan if column.startswith(RESULT_PREFIXES) else value)
            for column, value in row.items()}


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


def filter_runs(runs: pd.DataFrame, where: Sequence[str]) -> pd.DataFrame:
    """Only the runs whose hyperparameters match every NAME=VALUE in `where`."""
    for condition in where:
        name, sep, value = condition.partition("=")
        name = name.strip()
        if not sep or (name not in HParams.names() and f"params.{name}" not in runs):
            raise ConfigError(f"--where {condition!r}: expected NAME=VALUE with NAME one of "
                              f"{list(HParams.names())}, e.g. --where features=hog_pca")
        column = runs.get(f"params.{name}")
        if column is None:
            return runs.iloc[0:0]
        runs = runs[column.map(_comparable) == _comparable(value.strip())]
    return runs


def _comparable(value: Any) -> Any:
    number = _number(value)
    return number.lower() if isinstance(number, str) else number  # "true" matches "True"


def best_configuration(runs: pd.DataFrame) -> tuple[HParams, dict[str, Any], pd.Series]:
    """The complete configuration with the best validation accuracy (the mean over its seeds
    where it was repeated) among those meeting the study's constraints (the champion's rule),
    the leaderboard row it heads and that row's MLflow run."""
    row = complete_configurations(runs, "yet").iloc[0].to_dict()
    run = runs.loc[runs["run_id"] == row["Run ID"]].iloc[0]
    return HParams.from_params(run, where=f"run {row['Run ID']}"), row, run


def save_best_space(study: str, runs: pd.DataFrame, path: str | Path) -> tuple[HParams, dict[str, Any]]:
    """Write the study's best configuration as a search space that samples nothing
    (allsearch/spaces/best.yaml style): `--space FILE --trials 1 --repeats K` re-trains it over K seeds."""
    hparams, row, run = best_configuration(runs)
    variant = f" on {run['params.variant']}" if isinstance(run.get("params.variant"), str) else ""
    comments: tuple[str, ...] = (
        f"The best configuration of study '{study}'{variant}: trial {row['Trial']}, run {row['Run ID']},",
        f"validation accuracy {row['Validation Accuracy']:.3f} (n={row['n']}), test {row['Test Accuracy']:.3f};",
        "chosen by validation accuracy only (among the trials meeting the study's constraints, "
        "where it has some).",
        "Written by `python -m allsearch.leaderboard --study "
        f"{study} --save-space FILE`.",
        "It samples nothing: `python -m allsearch.study --space FILE --trials 1 --repeats 3 --data ...`",
        "trains it over 3 seeds.",
    )
    images = (run.get("params.image_size"), run.get("params.color"))
    if all(isinstance(v, str) for v in images) and images != ("100", "gray"):
        comments += (f"Its images: --image-size {images[0]} --color {images[1]} (pass both).",)
    model = run.get(f"params.{MODEL_FACTORY}")
    text = fixed_space_text(hparams, name=Path(path).stem,
                            description=f"The best configuration found by study '{study}'.",
                            comments=comments,
                            model=model if isinstance(model, str) and model != BUILT_IN_MODEL
                            else None)
    write_output(str(path), text, "--save-space")
    return hparams, row




def load_study_runs(study: str | None = None, *, tracking_uri: str | None = None
                    ) -> tuple[str, pd.DataFrame]:
    """(study name, its child runs); without a name, the study whose parent run is newest."""
    from allsearch.tracking.store import find_study_parent, runs_of_parent

    name, parent_id = find_study_parent(study, tracking_uri=tracking_uri)
    return name, runs_of_parent(parent_id, tracking_uri=tracking_uri)


def write_output(path: str, text: str, flag: str) -> None:
    """Write a command's output file, creating its folder; one line where it cannot be."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        reason = (f"{exc.filename} is a file, not a folder"
                  if isinstance(exc, FileExistsError | NotADirectoryError) and exc.filename
                  else exc.strerror or first_line(exc))
        raise ConfigError(f"{flag} '{path}' cannot be written ({reason}); pass a file in a "
                          f"folder you can write to") from None
