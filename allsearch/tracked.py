"""One configuration trained through run_trial and recorded through tracking.

Every engine (the Optuna study, the KerasTuner engine, table1) calls run_tracked, so failures,
pruning, interruptions, repeats and model logging are handled in one place and every child
run has the same shape.
"""

from __future__ import annotations

import errno
import resource
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from allsearch.data import Dataset
from allsearch.errors import StoreError
from allsearch.space import HParams
from allsearch.tracking import STORE_ERRORS, Tracker, TrialRun, _first_line
from allsearch.trial import RECALL_PREFIX, Precision, TrialResult, run_trial

__all__ = ["TrackedTrial", "run_tracked", "aggregate"]


@dataclass
class TrackedTrial:
    """What an engine needs back: the objective, the metrics and where they were logged."""

    run_id: str
    metrics: dict[str, float]
    results: list[TrialResult]
    model_uri: str | None

    @property
    def value(self) -> float:
        return self.metrics["val_accuracy"]


def run_tracked(tracker: Tracker, *, parent_id: str | None, name: str, dataset: Dataset,
                hparams: HParams, seeds: Sequence[int], params: dict[str, Any],
                tags: dict[str, Any] | None = None, precision: Precision = "float32",
                first_callbacks: Sequence[Any] = (),
                pruned_exceptions: tuple[type[BaseException], ...] = (),
                log_model: bool | Callable[[float], bool] = False,
                on_started: Callable[[TrialRun], None] | None = None) -> TrackedTrial:
    """Train `hparams` once per seed as one child run; re-raises after recording the state.

    The first seed streams its curves live and gets `first_callbacks` (e.g. a pruning
    callback); an exception in `pruned_exceptions` ends the run as PRUNED, Ctrl-C as KILLED,
    any other exception as FAIL with its error.
    """
    try:
        return _run_tracked(tracker, parent_id=parent_id, name=name, dataset=dataset,
                            hparams=hparams, seeds=seeds, params=params, tags=tags,
                            precision=precision, first_callbacks=first_callbacks,
                            pruned_exceptions=pruned_exceptions, log_model=log_model,
                            on_started=on_started)
    except STORE_ERRORS as exc:
        if isinstance(exc, OSError) and exc.errno not in _STORE_ERRNOS:
            raise
        # The store cannot be written: every further trial would fail the same way.
        raise StoreError(f"cannot write the MLflow store '{tracker.tracking_uri}' "
                         f"({_first_line(exc)}); free disk space or fix its permissions, then "
                         f"run the same command to resume") from None


_STORE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.EPERM}


def _run_tracked(tracker: Tracker, *, parent_id: str | None, name: str, dataset: Dataset,
                 hparams: HParams, seeds: Sequence[int], params: dict[str, Any],
                 tags: dict[str, Any] | None, precision: Precision, first_callbacks: Sequence[Any],
                 pruned_exceptions: tuple[type[BaseException], ...],
                 log_model: bool | Callable[[float], bool],
                 on_started: Callable[[TrialRun], None] | None) -> TrackedTrial:
    run = tracker.start_trial(parent_id=parent_id, name=name,
                              params={**hparams.to_dict(), "precision": precision, **params},
                              tags=tags)
    if on_started is not None:
        on_started(run)
    history: dict[str, list[float]] = {}
    results: list[TrialResult] = []
    try:
        for i, seed in enumerate(seeds):
            first = i == 0
            results.append(run_trial(dataset, hparams, seed=seed, precision=precision,
                                     callbacks=first_callbacks if first else (),
                                     on_epoch=run.log_epoch if first else None,
                                     history=history if first else None))
    except pruned_exceptions:
        run.log_curves(history, title=f"{name} (pruned)")
        tracker.log_metrics(run.run_id, {"epochs_run": len(history.get("loss", []))})
        run.end("PRUNED")
        raise
    except KeyboardInterrupt:
        run.log_curves(history, title=f"{name} (interrupted)")
        run.end("KILLED")
        raise
    except STORE_ERRORS:
        raise  # the run cannot be written either; run_tracked reports it
    except Exception as exc:
        run.log_curves(history, title=f"{name} (failed)")
        run.end("FAIL", error=exc)
        raise

    metrics = aggregate(results)
    # The process's peak resident memory so far: flat across trials when nothing leaks.
    metrics["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    wants_model = log_model(metrics["val_accuracy"]) if callable(log_model) else log_model
    run.log_curves(history, title=name)
    model_uri = run.log_result(results[0], dataset=dataset, log_model=wants_model, metrics=metrics)
    if len(results) > 1:
        for i, result in enumerate(results):
            tracker.log_metrics(run.run_id, {"repeat_val_accuracy": result.val_accuracy,
                                             "repeat_test_accuracy": result.test_accuracy}, step=i)
    run.end("COMPLETE")
    return TrackedTrial(run.run_id, metrics, results, model_uri)


def aggregate(results: Sequence[TrialResult]) -> dict[str, float]:
    """Final metrics averaged over repeats, with the spread of the accuracies and recalls."""
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


def record_duplicate(tracker: Tracker, *, parent_id: str, name: str, params: dict[str, Any],
                     tags: dict[str, Any], source_run_id: str, source_trial: Any) -> str:
    """A child run for a configuration already trained with the same seed: its metrics are
    copied from the earlier run (training is deterministic on a CPU) and it is tagged
    `duplicate_of`, so the leaderboard counts it once. Returns the new run's id."""
    run = tracker.start_trial(parent_id=parent_id, name=name, params=params,
                              tags={**tags, "duplicate_of": source_trial})
    tracker.log_metrics(run.run_id, tracker.client.get_run(source_run_id).data.metrics)
    run.end("COMPLETE")
    return run.run_id
