"""What a person sees of an Optuna study: the progress line while it runs, the summary after."""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.trial import TrialState

from allsearch.core.contract import PAPER_TABLE1_BEST, PARENT_ATTR, Store

__all__ = ["ProgressBar", "summarize", "failure_lines", "best_trial", "paper_line",
           "log_study_plots", "count_bar"]


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The best trial of a single-objective study (None before one completes, or where the
    study has several objectives: it has a front instead)."""
    try:
        return study.best_trial
    except (ValueError, RuntimeError):
        return None


class ProgressBar:
    """A tqdm line over counted trials: the best value so far and what the running trials are
    doing (epoch and latest validation accuracy, from the Optuna storage, so it works for
    trials in worker processes and on other machines alike)."""

    def __init__(self, study: optuna.Study, target: int,
                 counted: Callable[[Sequence[optuna.trial.FrozenTrial]], int],
                 epochs_of: Callable[[dict], int | None] = lambda params: None,
                 min_interval_s: float = 2.0, step: str = "epoch") -> None:
        from tqdm.auto import tqdm

        self.study = study
        self.counted = counted
        self.epochs_of = epochs_of
        self.step = step  # what a trial's reports count: epochs, or folds under --cv
        self.min_interval_s = min_interval_s
        self._last = -math.inf
        trials = study.get_trials(deepcopy=False)
        # smoothing=0: the rate is the average since the start, never a burst between polls.
        self.bar = tqdm(total=target, initial=min(target, counted(trials)), unit="trial",
                        desc=f"study {study.study_name}", dynamic_ncols=True, file=sys.stderr,
                        smoothing=0)
        self._show(trials)

    def refresh(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= self.min_interval_s:
            self._last = now
            self._show(self.study.get_trials(deepcopy=False))

    def _show(self, trials: Sequence[optuna.trial.FrozenTrial]) -> None:
        done = min(self.bar.total, self.counted(trials))
        if done > self.bar.n:
            self.bar.update(done - self.bar.n)
        parts = []
        values = [t.user_attrs["val_accuracy"] for t in trials
                  if t.state == TrialState.COMPLETE and t.user_attrs.get("val_accuracy") is not None]
        if values:
            parts.append(f"best val_accuracy {max(values):.3f}")
        for t in [t for t in trials if t.state == TrialState.RUNNING][:3]:
            steps = t.intermediate_values
            epochs = self.epochs_of(t.params)
            if steps:
                last = max(steps)
                of = f"/{epochs}" if epochs else ""
                parts.append(f"#{t.number} {self.step} {last + 1}{of} val {steps[last]:.3f}")
            else:
                parts.append(f"#{t.number} starting")
        self.bar.set_postfix_str("; ".join(parts), refresh=True)

    def on_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.refresh(force=True)

    def on_epoch(self, epoch: int, values: dict[str, float]) -> None:
        self.refresh(force=True)

    def close(self) -> None:
        self.refresh(force=True)
        self.bar.close()


def summarize(study: optuna.Study, *, record: str | None = None,
              constraints: Sequence[str] = ()) -> str:
    """The closing lines: counts, best trial, the paper's baseline configuration beside it."""
    trials = study.get_trials(deepcopy=False)
    counts = {s: sum(t.state == s for t in trials)
              for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    collapsed = sum(1 for t in trials if t.user_attrs.get("collapsed"))
    lines = [f"study '{study.study_name}': {len(trials)} trials "
             f"({counts[TrialState.COMPLETE]} complete, {counts[TrialState.PRUNED]} pruned, "
             f"{counts[TrialState.FAIL]} failed"
             + (f"; {collapsed} collapsed to one class" if collapsed else "") + ")"]
    lines += failure_lines(trials)

    def describe(t: optuna.trial.FrozenTrial) -> str:
        test = t.user_attrs.get("test_accuracy")
        params = " ".join(f"{k}={v}" for k, v in t.params.items())
        shown = f"val_accuracy {t.user_attrs.get('val_accuracy', math.nan):.3f}"
        if test is not None and not math.isnan(test):
            shown += f"  test_accuracy {test:.3f}"
        if t.user_attrs.get("collapsed"):
            shown += "  COLLAPSED (one class for every test image)"
        return f"{shown}  {params}"

    best = best_trial(study)
    if best is not None:
        lines.append(f"best trial #{best.number}:      {describe(best)}")
    objectives = study.user_attrs.get("objectives") or ["val_accuracy"]
    if len(objectives) > 1:
        from allsearch.engines.pareto import front_lines

        lines += front_lines(study, objectives, constraints)
    baseline = next((t for t in trials if t.user_attrs.get("baseline")), None)
    if baseline is not None and baseline.state == TrialState.COMPLETE:
        lines.append(f"baseline, #{baseline.number}: {describe(baseline)}")
    elif baseline is not None:
        lines.append(f"baseline, #{baseline.number}: {baseline.state.name}")
    lines.append(paper_line())
    parent = study.user_attrs.get(PARENT_ATTR)
    if record is not None:
        lines.append(f"recorded in '{record}' (no MLflow); put it into MLflow with: "
                     f"python -m allsearch.study import {record}")
    elif parent:
        lines.append(f"MLflow: experiment '{study.study_name}', parent run {parent}; browse with: "
                     f"python -m allsearch.ui")
    return "\n".join(lines)


def failure_lines(trials: Sequence[optuna.trial.FrozenTrial], *, most: int = 5) -> list[str]:
    """Why trials failed: each distinct reason once, with its count, most frequent first.

    The reason is the first line of the trial's `error` user attribute (the objective records
    the exception there; the trial's MLflow run carries it as its `error` tag). A failed trial
    without one was interrupted, or its process stopped (it does not count towards --trials)."""
    reasons: Counter[str] = Counter()
    for t in trials:
        if t.state == TrialState.FAIL:
            error = t.user_attrs.get("error")
            text = str(error).strip().splitlines()[0][:300] if error and str(error).strip() else ""
            reasons[text] += 1
    unexplained = reasons.pop("", 0)
    ranked = reasons.most_common()
    lines = [f"  {n} failed: {reason}" for reason, n in ranked[:most]]
    if len(ranked) > most:
        rest = ranked[most:]
        lines.append(f"  {sum(n for _, n in rest)} failed for {len(rest)} other reason(s); "
                     f"see the 'error' tag of their MLflow runs")
    if unexplained:
        lines.append(f"  {unexplained} failed without a recorded reason (interrupted, or "
                     f"their process stopped): not counted towards --trials")
    return lines


def paper_line() -> str:
    return (f"paper's Table 1 (one run):  val_accuracy {PAPER_TABLE1_BEST['val_accuracy']:.2f}"
            f"  test_accuracy {PAPER_TABLE1_BEST['test_accuracy']:.2f}")


def log_study_plots(study: optuna.Study, store: Store, parent_id: str) -> None:
    """Optuna's optimization history and (with variation) parameter importances."""
    from optuna.visualization import matplotlib as optuna_plots

    from allsearch.core.errors import store_errors
    from allsearch.training.reports import plot_figure

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return
    plots: list[tuple[str, Callable[[optuna.Study], Any]]] = [
        ("optimization_history.png", optuna_plots.plot_optimization_history)]
    if len(complete) >= 2 and len({tuple(sorted(t.params.items())) for t in complete}) >= 2:
        plots.append(("param_importances.png", optuna_plots.plot_param_importances))
    for name, plot in plots:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = plot(study)
            store.log_figure(parent_id, plot_figure(axes, 8, 4.5), name)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            # Importances need variation among complete trials; say why it is missing.
            store.log_text(parent_id, f"{name} not drawn: {exc}\n", name.replace(".png", ".txt"))
        except store_errors():
            return


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def count_bar(total: int, enabled: bool, desc: str) -> Any:
    """A progress bar over `total` runs (table1, confirm), or one that shows nothing."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="run", desc=desc, file=sys.stderr, smoothing=0)
