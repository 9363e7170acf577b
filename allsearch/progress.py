"""What a person sees of an Optuna study: the progress line while it runs, the summary after."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable

import optuna
from optuna.trial import TrialState

from allsearch.contract import PAPER_TABLE1_BEST, PARENT_ATTR

__all__ = ["ProgressBar", "summarize", "best_trial", "paper_line"]


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:
        return None


class ProgressBar:
    """A tqdm bar over counted trials, showing the best value so far."""

    def __init__(self, study: optuna.Study, target: int,
                 counted: Callable[[optuna.Study], int]) -> None:
        from tqdm.auto import tqdm

        self.study = study
        self.counted = counted
        self.bar = tqdm(total=target, initial=min(target, counted(study)), unit="trial",
                        desc=f"study {study.study_name}", dynamic_ncols=True, file=sys.stderr)
        self.refresh()

    def refresh(self) -> None:
        done = min(self.bar.total, self.counted(self.study))
        if done != self.bar.n:
            self.bar.update(done - self.bar.n)
        values = [t.value for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                  if t.value is not None]
        if values:
            self.bar.set_postfix_str(f"best val_accuracy {max(values):.3f}")

    def on_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.refresh()

    def close(self) -> None:
        self.refresh()
        self.bar.close()


def summarize(study: optuna.Study) -> str:
    """The closing lines: counts, best trial, the paper's baseline configuration beside it."""
    trials = study.get_trials(deepcopy=False)
    counts = {s: sum(t.state == s for t in trials)
              for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    lines = [f"study '{study.study_name}': {len(trials)} trials "
             f"({counts[TrialState.COMPLETE]} complete, {counts[TrialState.PRUNED]} pruned, "
             f"{counts[TrialState.FAIL]} failed)"]

    def describe(t: optuna.trial.FrozenTrial) -> str:
        test = t.user_attrs.get("test_accuracy")
        params = " ".join(f"{k}={v}" for k, v in t.params.items())
        shown = f"val_accuracy {t.value:.3f}"
        if test is not None and not math.isnan(test):
            shown += f"  test_accuracy {test:.3f}"
        return f"{shown}  {params}"

    best = best_trial(study)
    if best is not None:
        lines.append(f"best trial #{best.number}:      {describe(best)}")
    baseline = next((t for t in trials if t.user_attrs.get("baseline")), None)
    if baseline is not None and baseline.state == TrialState.COMPLETE:
        lines.append(f"paper's config, #{baseline.number}: {describe(baseline)}")
    elif baseline is not None:
        lines.append(f"paper's config, #{baseline.number}: {baseline.state.name}")
    lines.append(paper_line())
    parent = study.user_attrs.get(PARENT_ATTR)
    if parent:
        lines.append(f"MLflow: experiment '{study.study_name}', parent run {parent}; browse with: "
                     f"python -m allsearch.ui")
    return "\n".join(lines)


def paper_line() -> str:
    return (f"paper's Table 1 (one run):  val_accuracy {PAPER_TABLE1_BEST['val_accuracy']:.2f}"
            f"  test_accuracy {PAPER_TABLE1_BEST['test_accuracy']:.2f}")
