"""One configuration trained through run_trial and written to a store as one child run.

Every engine (the Optuna study, the KerasTuner engine, table1) calls run_tracked, so failures,
pruning, interruptions, repeats, model logging and the duplicate rule are handled in one place
and every child run has the same shape. The store is an allsearch.core.contract.Store: a Tracker
(MLflow) or a Recorder (a folder); this module imports neither, nor asks which it has.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import resource
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from allsearch.core.contract import (
    COLLAPSED,
    CONFIG_KEY,
    MODEL_URI,
    ROLE,
    RUN_STATUS,
    STATE,
    FoundRun,
    State,
    Store,
)
from allsearch.core.errors import StoreError, cannot_write, first_line, store_errors
from allsearch.core.hardware import (
    Precision,
    deferred_interrupts,
    interruptible,
    raise_if_interrupted,
)
from allsearch.core.space import HParams
from allsearch.data.dataset import Dataset
from allsearch.tracking.identity import config_key, find_duplicate, trial_params
from allsearch.tracking.writer import Writer
from allsearch.training import reports
from allsearch.training.results import TrialResult, aggregate
from allsearch.training.user_model import PAPER, Factory

__all__ = ["TrackedTrial", "TrialRun", "start_trial", "run_tracked", "aggregate", "config_key",
           "find_duplicate", "record_duplicate", "trial_params", "STORE_ERRORS", "SUMMARY_FILE"]


STORE_ERRORS = store_errors()
# What stops a study, not a trial: a store that cannot be written, raw or said (StoreError).
_STORE_STOPS: tuple[type[BaseException], ...] = (*STORE_ERRORS, StoreError)
TIME_PREFIX = "time_"  # metrics time_*_s: where a trial's seconds went
SUMMARY_FILE = "network_summary.txt"  # Keras' summary of the trial's network
_STORE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.EPERM}


@dataclass
class TrialRun:
    """One trial's run in a store, fed while the trial trains."""

    store: Store
    run_id: str

    def log_epoch(self, epoch: int, values: dict[str, float]) -> None:
        self.store.log_metrics(self.run_id, values, step=epoch)

    def log_curves(self, history: dict[str, list[float]], *, title: str = "") -> None:
        if history:
            self.store.log_figure(self.run_id, reports.curves_figure(history, title=title),
                                  "learning_curves.png")

    def log_result(self, result: TrialResult, *, dataset: Dataset | None = None,
                   log_model: bool = False, metrics: dict[str, float] | None = None) -> str | None:
        """Final metrics (or `metrics`, e.g. means over repeats) and artifacts; the model
        too when asked. Returns the logged model's URI."""
        self.log_final_metrics(result, metrics)
        self.log_artifacts(result)
        return self.log_model(result, dataset=dataset) if log_model else None

    def log_final_metrics(self, result: TrialResult, metrics: dict[str, float] | None = None
                          ) -> None:
        """The result's metrics (or `metrics`, e.g. means over repeats)."""
        # At the last epoch's step: the final val_accuracy shares its name with the curve's.
        self.store.log_metrics(self.run_id, result.final_metrics() if metrics is None else metrics,
                               step=max(0, result.epochs_run - 1))

    def log_artifacts(self, result: TrialResult) -> None:
        """Confusion matrix, per-class report, the test predictions, the network's summary."""
        store, run_id = self.store, self.run_id
        if result.summary:
            store.log_text(run_id, result.summary, SUMMARY_FILE)
        store.log_figure(run_id, reports.confusion_figure(result.confusion(), result.class_names),
                         "confusion_matrix.png")
        store.log_dict(run_id, result.per_class_report(), "per_class_report.json")
        store.log_text(run_id, reports.predictions_csv(
            result.test_files, result.y_test, result.test_probabilities, result.class_names),
            "test_predictions.csv")

    def log_model(self, result: TrialResult, *, dataset: Dataset | None = None) -> str | None:
        """The trained network as an image-taking MLflow model; returns its URI."""
        if result.model is None:
            return None
        pipeline = (dataset.features.pipeline
                    if dataset is not None and dataset.features is not None else None)
        # The images' size and colour travel with the hyperparameters: the model decodes new
        # files with them (allsearch.training.serving), exactly as the training images were.
        images = dataset.image_settings if dataset is not None else {}
        uri = self.store.log_model(self.run_id, network=result.model,
                                   class_names=result.class_names,
                                   hparams={**result.hparams.to_dict(), **images},
                                   pipeline=pipeline)
        self.store.set_tags(self.run_id, {MODEL_URI: uri})
        return uri

    def end(self, state: State, *, error: BaseException | None = None) -> None:
        tags: dict[str, Any] = {STATE: state}
        if error is not None:
            tags["error"] = first_line(error)[:4000]
            self.store.log_text(self.run_id, "".join(traceback.format_exception(error)),
                                "error.txt")
        self.store.set_tags(self.run_id, tags)
        self.store.end_run(self.run_id, RUN_STATUS[state])


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

    @property
    def collapsed(self) -> bool:
        return any(r.collapsed for r in self.results)


def run_trial(*args: Any, **kwargs: Any) -> TrialResult:
    """allsearch.training.trial.run_trial, imported when a trial first trains: a process that only
    supervises, records duplicates or runs a stand-in never loads Keras."""
    from allsearch.training import trial

    return trial.run_trial(*args, **kwargs)


def start_trial(store: Store, *, parent_id: str | None, name: str, params: dict[str, Any],
                tags: dict[str, Any] | None = None) -> TrialRun:
    """A new trial run (role trial, state RUNNING) under `parent_id`."""
    run_id = store.start_run(parent_id=parent_id, name=name, params=params,
                             tags={ROLE: "trial", STATE: "RUNNING", **(tags or {})})
    return TrialRun(store, run_id)


def record_duplicate(store: Store, *, parent_id: str, name: str, params: dict[str, Any],
                     tags: dict[str, Any], source: FoundRun) -> str:
    """A child run for a computation already done (`source`, from find_duplicate): its
    metrics are copied from the earlier run and it is tagged `duplicate_of` (the trial that
    trained it), so the leaderboard counts it once. Returns its id."""
    source_id, metrics, source_tags = source
    trained_by = source_tags.get("duplicate_of") or source_tags.get("trial_number", "")
    run = start_trial(store, parent_id=parent_id, name=name, params=params,
                      tags={**tags, "duplicate_of": trained_by, "duplicate_run": source_id})
    # The results are copied; the seconds are not (this run trained nothing).
    store.log_metrics(run.run_id, {k: v for k, v in metrics.items()
                                   if not k.startswith(TIME_PREFIX) and k != "peak_rss_mb"})
    run.end("COMPLETE")
    return run.run_id


def run_tracked(store: Store, *, parent_id: str | None, name: str, dataset: Dataset,
                hparams: HParams, seeds: Sequence[int], params: dict[str, Any],
                tags: dict[str, Any] | None = None, precision: Precision = "float32",
                first_callbacks: Sequence[Any] = (),
                pruned_exceptions: tuple[type[BaseException], ...] = (),
                log_model: bool | Callable[[dict[str, float]], bool] = False,
                on_started: Callable[[TrialRun], None] | None = None,
                on_epoch: Callable[[int, dict[str, float]], None] | None = None,
                trainer: Callable[..., TrialResult] | None = None,
                timings: dict[str, float] | None = None,
                writer: Writer | None = None, cv: Any = None,
                factory: Factory = PAPER) -> TrackedTrial:
    """Train `hparams` once per seed as one child run; re-raises after recording the state.

    The first seed streams its curves live (and to `on_epoch`, e.g. a progress line) and gets
    `first_callbacks` (e.g. a pruning callback); an exception in `pruned_exceptions` ends the
    run as PRUNED, Ctrl-C as KILLED, any other exception as FAIL with its error; a store that
    cannot be written raises a StoreError (the study stops) after ending the run KILLED where
    the store still takes that much (else the next command does, at its start). The run gets
    the seconds of each stage as metrics time_*_s (build, fit, evaluate, logging, model
    logging, the whole trial, and `timings` the caller measured, e.g. a worker's start), so
    the MLflow UI shows where a trial's time went. The run's metrics and end state are
    written before this returns; with a `writer`, its figures and tables are written in the
    writer's background thread (time_finish_s) while the caller goes on, and a failure there
    is raised when the next trial has trained. With `cv` (an allsearch.training.folds.CrossValidation)
    each seed trains once per fold, and `cv` logs each fold's figures and reports to a pruner.
    `factory`: the network (a user's, or the paper's CNN family).
    """
    try:
        return _run_tracked(store, parent_id=parent_id, name=name, dataset=dataset,
                            hparams=hparams, seeds=seeds, params=params, tags=tags,
                            precision=precision, first_callbacks=first_callbacks,
                            pruned_exceptions=pruned_exceptions, log_model=log_model,
                            on_started=on_started, on_epoch=on_epoch,
                            trainer=trainer or run_trial, timings=timings or {},
                            writer=writer, cv=cv, factory=factory)
    except STORE_ERRORS as exc:
        raise _broken_store(store, exc) from None


def _broken_store(store: Store, exc: BaseException) -> BaseException:
    """What a failed write raises: a StoreError when the store cannot be written (every
    further trial would fail the same way), else the error itself."""
    if isinstance(exc, OSError) and exc.errno not in _STORE_ERRNOS:
        return exc
    return StoreError(cannot_write(store.location, exc, store.folders))


def _run_tracked(store: Store, *, parent_id: str | None, name: str, dataset: Dataset,
                 hparams: HParams, seeds: Sequence[int], params: dict[str, Any],
                 tags: dict[str, Any] | None, precision: Precision, first_callbacks: Sequence[Any],
                 pruned_exceptions: tuple[type[BaseException], ...],
                 log_model: bool | Callable[[dict[str, float]], bool],
                 on_started: Callable[[TrialRun], None] | None,
                 on_epoch: Callable[[int, dict[str, float]], None] | None,
                 trainer: Callable[..., TrialResult], timings: dict[str, float],
                 writer: Writer | None, cv: Any, factory: Factory) -> TrackedTrial:
    raise_if_interrupted()
    if writer is not None:
        writer.check()  # an earlier run the writer could not finish stops the study here
    started = time.perf_counter()
    key = config_key(hparams, seeds=seeds, dataset=dataset, precision=precision,
                     cv=cv.k if cv else 0, factory=factory)
    untimed, timed = store, _Timed(store)
    run = start_trial(timed, parent_id=parent_id, name=name,
                      params=trial_params(hparams, precision=precision, factory=factory,
                                          params=params),
                      tags={CONFIG_KEY: key, **(tags or {})})
    try:
        if on_started is not None:
            on_started(run)
        history: dict[str, list[float]] = {}
        results = _train(run, name=name, dataset=dataset, hparams=hparams, seeds=seeds,
                         precision=precision, first_callbacks=first_callbacks,
                         pruned_exceptions=pruned_exceptions, on_epoch=on_epoch,
                         trainer=trainer, history=history, writer=writer, untimed=untimed,
                         cv=cv, factory=factory)
        if writer is not None:
            # The previous run is written by now (one run at most is behind), or its failure
            # stops the study here, before this one writes.
            writer.drain()
        return _complete(run, untimed, timed.seconds, name=name, dataset=dataset, results=results,
                         history=history, log_model=log_model, timings=timings,
                         started=started, writer=writer, cv=cv)
    except _STORE_STOPS as exc:
        _close_stopped(untimed, run.run_id, exc)
        raise


def _train(run: TrialRun, *, name: str, dataset: Dataset, hparams: HParams,
           seeds: Sequence[int], precision: Precision, first_callbacks: Sequence[Any],
           pruned_exceptions: tuple[type[BaseException], ...],
           on_epoch: Callable[[int, dict[str, float]], None] | None,
           trainer: Callable[..., TrialResult], history: dict[str, list[float]],
           writer: Writer | None, untimed: Store, cv: Any,
           factory: Factory) -> list[TrialResult]:
    """One result per seed (per seed and fold with `cv`); a trial that stops early ends its
    run (PRUNED, KILLED, FAIL)."""
    results: list[TrialResult] = []

    def log_epoch(epoch: int, values: dict[str, float]) -> None:
        with deferred_interrupts():  # a Ctrl-C now stops the training once this is written
            run.log_epoch(epoch, values)
            if on_epoch is not None:
                on_epoch(epoch, values)

    try:
        jobs = ((s, d) for s in seeds for d in (cv.datasets() if cv is not None else (dataset,)))
        for i, (seed, data) in enumerate(jobs):
            first = i == 0
            with interruptible():  # Ctrl-C stops the training at once
                results.append(trainer(data, hparams, seed=seed, precision=precision,
                                         callbacks=first_callbacks if first else (),
                                         on_epoch=log_epoch if first else None,
                                         history=history if first else None,
                                         factory=factory))
            if cv is not None:  # the fold's figures; a pruner may stop the trial here
                cv.after_fold(run, results)
    # A run's state is written before the engine hears of its end (a worker killed later
    # leaves no run RUNNING); its figures and tables may follow from the writer.
    except pruned_exceptions:
        run.store.log_metrics(run.run_id, {"epochs_run": len(history.get("loss", []))})
        run.end("PRUNED")
        _write(writer, lambda: run.log_curves(history, title=f"{name} (pruned)"), untimed)
        raise
    except KeyboardInterrupt:
        # Ctrl-C stops the study also where the store cannot be written now (a server gone):
        # the next command closes the run then.
        with contextlib.suppress(*_STORE_STOPS):
            run.end("KILLED")
            _write(writer, lambda: run.log_curves(history, title=f"{name} (interrupted)"),
                   untimed)
        raise
    except _STORE_STOPS:
        raise  # the run cannot be written either; run_tracked reports it
    except Exception as exc:
        run.end("FAIL", error=exc)
        _write(writer, lambda: run.log_curves(history, title=f"{name} (failed)"), untimed)
        raise
    return results


def _complete(run: TrialRun, untimed: Store, seconds: dict[str, float], *, name: str,
              dataset: Dataset, results: list[TrialResult], history: dict[str, list[float]],
              log_model: bool | Callable[[dict[str, float]], bool], timings: dict[str, float],
              started: float, writer: Writer | None, cv: Any) -> TrackedTrial:
    """The metrics, model and end of a trial that trained; its figures and tables after.
    `seconds`: what the run's writes took so far (_Timed)."""
    store = run.store
    metrics = aggregate(results) if cv is None else cv.metrics(results)
    collapsed = sum(r.collapsed for r in results)
    if collapsed:
        store.set_tags(run.run_id, {COLLAPSED: "true",
                                    "collapsed_seeds": f"{collapsed} of {len(results)}"})
    # The process's peak resident memory so far: flat across trials when nothing leaks.
    metrics["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    wants_model = log_model(metrics) if callable(log_model) else log_model
    # The model is written here (Keras is not used from two threads), and the run's metrics
    # and end; its figures and tables in the background when there is a writer.
    model_uri = run.log_model(results[0], dataset=dataset) if wants_model else None
    run.log_final_metrics(results[0], metrics)
    if len(results) > 1 and cv is None:  # (cv logged each fold's as it ended)
        for i, result in enumerate(results):
            store.log_metrics(run.run_id, {"repeat_val_accuracy": result.val_accuracy,
                                           "repeat_test_accuracy": result.test_accuracy}, step=i)
    untimed.log_metrics(run.run_id, {**seconds, **timings,
                                     "time_trial_s": time.perf_counter() - started})
    run.end("COMPLETE")
    results = [dataclasses.replace(r, model=None) for r in results]  # freed before the next

    def finish() -> None:
        writing = time.perf_counter()
        run.log_curves(history, title=name)
        run.log_artifacts(results[0])
        untimed.log_metrics(run.run_id, {"time_finish_s": time.perf_counter() - writing})

    _write(writer, finish, untimed)
    return TrackedTrial(run.run_id, metrics, results, model_uri)


def _close_stopped(store: Store, run_id: str, exc: BaseException) -> None:
    """End KILLED the run of a trial that a store failure stopped (the trial did not fail: a
    resumed study runs it again), where the store still takes these small writes; where it
    does not, the next command closes it at its start (lifecycle.close_dead_runs)."""
    reason = str(exc) if isinstance(exc, StoreError) else str(_broken_store(store, exc))
    with contextlib.suppress(*_STORE_STOPS):
        if store.run_status(run_id) == "RUNNING":
            store.set_tags(run_id, {STATE: "KILLED", "error": f"stopped: {reason}"[:4000]})
            store.end_run(run_id, "KILLED")


def _write(writer: Writer | None, job: Callable[[], None], store: Store) -> None:
    """Run `job` (the end of a run) now, or in `writer`'s background thread."""
    def guarded() -> None:
        try:
            job()
        except STORE_ERRORS as exc:
            raise _broken_store(store, exc) from None

    if writer is None:
        job()
    else:
        writer.submit(guarded)


class _Timed:
    """A store whose calls are timed: the seconds a trial spends writing its run (the model
    apart). Per-epoch logging happens inside fit, so it is counted in both."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.seconds = {"time_logging_s": 0.0, "time_model_logging_s": 0.0}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if not callable(attr):
            return attr
        key = "time_model_logging_s" if name == "log_model" else "time_logging_s"

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                self.seconds[key] += time.perf_counter() - started

        return timed

