"""A multi-objective study's Pareto front: feasibility, tags, the plot, the table, the summary.

Optuna keeps the front (study.best_trials: the trials no other trial beats on every objective;
with constraints, feasible trials only). This module writes it where people look: every trial
run on it gets the tag pareto_front=true (the MLflow UI filters on it), the parent run gets
Optuna's Pareto-front plot and the front as CSV and HTML, and the summary lists it.

A trial's constraint values are Optuna's own (`Trial.set_constraint`, one per --constraint,
named by its text): TPE and NSGA-II learn from them, and Optuna's best trial and front keep to
the feasible trials.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import optuna
from optuna.trial import TrialState

from allsearch.core.contract import Store
from allsearch.core.objectives import FEASIBLE, PARETO, describe, parse_constraint

__all__ = ["constraint_values", "set_constraints", "tag_front", "log_front", "front_lines"]


def constraint_values(constraints: Sequence[str], metrics: dict[str, float]) -> list[float]:
    """Each constraint's violation for a run's metrics (a missing metric violates it)."""
    values = []
    for text in constraints:
        c = parse_constraint(text)
        value = metrics.get(c.metric)
        values.append(c.violation(value) if value is not None and math.isfinite(value) else 1.0)
    return values


def set_constraints(trial: optuna.Trial, constraints: Sequence[str],
                    metrics: dict[str, float]) -> bool:
    """Record each constraint's violation on the trial (Optuna's `Trial.set_constraint`, named
    by the constraint's text; a pruned trial, with no metrics, violates every one); says
    whether the trial meets them all."""
    violations = constraint_values(constraints, metrics)
    named = {str(parse_constraint(text)): value
             for text, value in zip(constraints, violations, strict=True)}
    for name, value in named.items():  # a constraint given twice is one constraint
        trial.set_constraint(name, value)
    return all(v <= 0 for v in violations)


def _front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return list(study.best_trials)


def tag_front(study: optuna.Study, store: Store) -> list[optuna.trial.FrozenTrial]:
    """Tag every complete trial's run pareto_front=true|false; returns the front."""
    front = _front(study)
    on = {t.number for t in front}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id:
            store.set_tags(run_id, {PARETO: str(trial.number in on).lower()})
    return front


def log_front(study: optuna.Study, store: Store, parent_id: str, objectives: Sequence[str]) -> None:
    """The front on the parent run: Optuna's plot (2 or 3 objectives) and a CSV/HTML table."""
    import pandas as pd
    from optuna.visualization import matplotlib as optuna_plots

    from allsearch.training.reports import plot_figure

    front = tag_front(study, store)
    rows = [{"trial": t.number, **dict(zip(objectives, t.values, strict=True)),
             FEASIBLE: t.user_attrs.get(FEASIBLE, True),
             "test_accuracy": t.user_attrs.get("test_accuracy"), **t.params}
            for t in sorted(front, key=lambda t: t.values[0], reverse=_maximized(study, 0))]
    table = pd.DataFrame(rows)
    store.log_text(parent_id, table.to_csv(index=False), "pareto_front.csv")
    store.log_text(parent_id, table.to_html(index=False, border=0), "pareto_front.html")
    if 2 <= len(objectives) <= 3 and front:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = optuna_plots.plot_pareto_front(study, target_names=list(objectives))
            store.log_figure(parent_id, plot_figure(axes, 7, 5), "pareto_front.png")
        except (ValueError, RuntimeError) as exc:
            store.log_text(parent_id, f"pareto_front.png not drawn: {exc}\n", "pareto_front.txt")


def _maximized(study: optuna.Study, index: int) -> bool:
    return study.directions[index] == optuna.study.StudyDirection.MAXIMIZE


def front_lines(study: optuna.Study, objectives: Sequence[str],
                constraints: Sequence[str] = ()) -> list[str]:
    """The summary's lines for a multi-objective study: what it optimized and its front."""
    front = sorted(_front(study), key=lambda t: t.values[0], reverse=_maximized(study, 0))
    lines = [f"objectives: {describe(objectives, [parse_constraint(c) for c in constraints])}",
             f"Pareto front: {len(front)} trial(s) (tagged pareto_front=true in MLflow; "
             f"python -m allsearch.leaderboard --pareto)"]
    for t in front:
        values = "  ".join(f"{n} {v:.4g}" for n, v in zip(objectives, t.values, strict=True))
        lines.append(f"  #{t.number}: {values}  " + " ".join(f"{k}={v}" for k, v in t.params.items()))
    return lines
