"""The Optuna engine: sample a space, train each trial through run_tracked, settle its state.

The Optuna storage is the source of truth (allsearch.engines.storage): it holds the trials and the id
of the study's parent run, so every worker, on any machine, nests its runs under one parent,
and running the same command again resumes the study. Optuna's own pieces do the work:
samplers, pruners (optuna-integration's Keras pruning callback), heartbeats and callbacks.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import optuna
from optuna.trial import TrialState

from allsearch.core.config import StudyConfig
from allsearch.core.contract import OBJECTIVES_ATTR, PARENT_ATTR
from allsearch.core.errors import ConfigError, StoreError, first_line, redact, store_errors, write_failure
from allsearch.core.hardware import deferred_interrupts, resident_mb
from allsearch.core.objectives import directions
from allsearch.core.space import SearchSpace
from allsearch.data.dataset import Dataset
from allsearch.engines import lifecycle, pareto, workers
from allsearch.engines.lifecycle import Prepared
from allsearch.engines.optuna_trial import ENGINE, Context, objective
from allsearch.engines.progress import ProgressBar, log_study_plots, summarize
from allsearch.engines.samplers import Reseed, make_pruner, make_sampler, study_sampler
from allsearch.engines.storage import (
    fail_stale_trials,
    open_storage,
    retry_stale_trial,
    storage_url,
    trial_heartbeats,
)

__all__ = ["ENGINE", "make_sampler", "make_pruner", "open_study", "OpenedStudy", "counted_trials",
           "run", "worker_main", "summarize", "Retire"]



@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's own lines (each trial's values, a stopped trial's traceback) repeat what the
    progress line, the summary and the runs' states say; --debug shows them. Only while trials
    run: the caller's verbosity is put back after (importing allsearch sets nothing)."""
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO if os.environ.get("ALLSEARCH_DEBUG")
                                 else optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)


class OpenedStudy(NamedTuple):
    study: optuna.Study
    created: bool  # this process created it (else it existed)
    storage: optuna.storages.BaseStorage  # what it was opened on (a database, or a proxy)


def open_study(config: StudyConfig, space: SearchSpace, *, sampler_seed: int | None = None
               ) -> OpenedStudy:
    """Create the study, or load it when it exists; says which."""
    storage = open_storage(config.storage, record=config.record)
    # A grid sampler shuffles the grid by its seed and stores grid ids: every process must
    # share that seed, or an id names another point in each process (duplicates, gaps).
    seed = config.seed if sampler_seed is None or config.sampler == "grid" else sampler_seed
    objectives = config.objectives or ("val_accuracy",)
    sampler = study_sampler(config, space, seed)
    pruner = make_pruner(config.pruner, space, objectives=objectives, say=sampler_seed is None,
                         cv=config.cv)
    name = config.study_name or space.name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            try:
                study = optuna.create_study(storage=storage, study_name=name, sampler=sampler,
                                            pruner=pruner,
                                            directions=directions(objectives))
                study.set_user_attr(OBJECTIVES_ATTR, list(objectives))
                return OpenedStudy(study, True, storage)
            except optuna.exceptions.DuplicatedStudyError:
                study = optuna.load_study(study_name=name, storage=storage, sampler=sampler,
                                          pruner=pruner)
                had = tuple(study.user_attrs.get(OBJECTIVES_ATTR, ["val_accuracy"]))
                if had != tuple(objectives):
                    raise ConfigError(f"study '{name}' optimizes {list(had)}, not "
                                      f"{list(objectives)}: pass --objectives {' '.join(had)} "
                                      f"to resume it, or --study-name for a new study") from None
                return OpenedStudy(study, False, storage)
        except store_errors() as exc:
            url = getattr(storage, "url", None) or config.storage or ""
            raise StoreError(f"study storage '{redact(url)}' cannot be used "
                             f"({first_line(exc)}); check that its folder is writable and the "
                             f"disk not full, or pass another --storage") from None


def counted_trials(study: optuna.Study) -> int:
    """Trials that count towards --trials: finished ones and the ones that failed by error.

    A trial failed by Ctrl-C, or left RUNNING by a dead worker, is not counted: it is run again.
    """
    return count_finished(study.get_trials(deepcopy=False))


def count_finished(trials: Sequence[optuna.trial.FrozenTrial]) -> int:
    return sum(1 for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               or (t.state == TrialState.FAIL and t.user_attrs.get("error")))


def progress_bar(study: optuna.Study, config: StudyConfig, space: SearchSpace) -> ProgressBar:
    def epochs_of(params: dict[str, Any]) -> int | None:
        try:
            return space.hparams(params).epochs
        except Exception:  # noqa: BLE001  (a trial still sampling its parameters)
            return None

    if config.cv:  # a trial reports the running mean after each fold
        return ProgressBar(study, config.trials, count_finished, lambda params: config.cv,
                           step="fold")
    return ProgressBar(study, config.trials, count_finished, epochs_of)


class _StopAtTarget:
    """Stops every worker once the study holds `target` counted trials."""

    def __init__(self, target: int) -> None:
        self.target = target

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if counted_trials(study) >= self.target:
            study.stop()


def optimize(study: optuna.Study, ctx: Context, n_trials: int, timeout: float | None, *,
             callbacks: Sequence[Callable[..., None]] = ()) -> None:
    """Run trials in this process until the study is full, `n_trials` ran, or this process
    should make way for a fresh one (--trials-per-process, --worker-memory-mb)."""
    reseed = Reseed(ctx.config, ctx.space)
    reseed(study, None)

    def run_one(trial: optuna.Trial) -> float | list[float]:
        with trial_heartbeats(ctx.storage, trial):
            return objective(ctx, trial)

    every: list[Any] = [_StopAtTarget(ctx.config.trials), Retire(ctx.config), reseed,
                        *callbacks]
    if ctx.bar is not None:
        every.append(ctx.bar.on_trial)
    try:
        try:
            # Optuna's writes to its storage are never cut by a signal: it waits for them
            # and stops the study at the next safe point (a trial's training stops at once).
            with warnings.catch_warnings(), deferred_interrupts():
                warnings.simplefilter("ignore")
                study.optimize(run_one, n_trials=n_trials,
                               timeout=timeout, catch=(Exception,), callbacks=every,
                               gc_after_trial=True)
        finally:
            ctx.writer.drain()  # the last trials' runs are finished however the loop ended
    except Exception as exc:
        # A store that stopped a trial is the error to say (Optuna may then fail to write the
        # trial's end too, and raises its own AssertionError from that).
        said = ctx.fatal or _storage_failure(ctx.config, exc)
        if said is None:
            raise
        raise said from None
    if ctx.fatal is not None:
        raise ctx.fatal


class Retire:
    """Stops this process's trials once it ran --trials-per-process of them, or before a next
    trial would take its resident memory more than --worker-memory-mb past its first trial
    (judged by the last trial's growth); a fresh process then takes over."""

    def __init__(self, config: StudyConfig) -> None:
        self.config = config
        self.done = 0
        self.baseline: float | None = None
        self.last: float | None = None

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.done += 1
        resident = resident_mb()
        if self.baseline is None:
            self.baseline = resident  # after the first fit: TensorFlow's own start-up is in
        step = (max(0.0, resident - self.last)
                if resident is not None and self.last is not None else 0.0)
        self.last = resident
        limit = self.config.worker_memory_mb
        if (self.config.trials_per_process and self.done >= self.config.trials_per_process) or (
                limit and resident is not None and self.baseline is not None
                and resident + step - self.baseline > limit):
            study.stop()


# ------------------------------------------------------------------------- running a study


def _parent(study: optuna.Study, created: bool, store: Any, prepared: Prepared,
            dataset: Dataset) -> str:
    """The study's parent run: made by whoever created the study, found by everyone else."""
    known = study.user_attrs.get(PARENT_ATTR)
    if known is None and not created:
        for _ in range(60):  # the creating worker is making it right now
            time.sleep(1)
            known = study.user_attrs.get(PARENT_ATTR)  # read from the storage each time
            if known:
                break
    parent_id = lifecycle.start(store, prepared, dataset, known=known)
    if parent_id != known:
        study.set_user_attr(PARENT_ATTR, parent_id)
    return parent_id


def _storage_failure(config: StudyConfig, exc: BaseException) -> StoreError | None:
    """The StoreError for `exc` where a write to the Optuna storage failed behind it."""
    url = storage_url(config.storage, record=config.record)
    folder = url.removeprefix("sqlite:///").rsplit("/", 1)[0] if url.startswith("sqlite:///") else None
    return write_failure(f"study storage '{redact(url)}'", exc, [folder] if folder else [])


def _fail_ended_trials(study: optuna.Study) -> None:
    """Trials still RUNNING whose process on this machine has ended (one that could not write
    its trial's end, say on a full disk) are failed and retried now: an ended process sends
    no heartbeat to wait the grace period for."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        key = trial.user_attrs.get(lifecycle.PROCESS_ATTR)
        if key and lifecycle.process_ended(key):
            try:
                failed = study.tell(trial.number, state=TrialState.FAIL)
            except (ValueError, RuntimeError):
                continue  # another command failed it first (and retries it)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                retry_stale_trial(study, failed)


def _dead_runs(study: optuna.Study) -> list[str]:
    """Runs of trials that ended without closing their run (a killed worker, failed by the
    heartbeat): a failed trial with no error of its own."""
    return [t.user_attrs["mlflow_run_id"]
            for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
            if t.user_attrs.get("mlflow_run_id") and not t.user_attrs.get("error")]


def run(prepared: Prepared, *, trial_callbacks: Sequence[Callable[..., None]] = ()
        ) -> optuna.Study:
    """Run (or resume) the study until it holds `config.trials` counted trials."""
    with quiet_optuna():
        return _run(prepared, trial_callbacks)


def _run(prepared: Prepared, trial_callbacks: Sequence[Callable[..., None]]) -> optuna.Study:
    config, space = prepared.config, prepared.space
    # Everything a user can get wrong is checked before any training starts; the data first,
    # so that a folder that cannot be used leaves no empty study or experiment behind.
    loading = time.perf_counter()
    dataset = lifecycle.load_data(config, space, prepared.factory)
    data_load_s = time.perf_counter() - loading
    study, created, storage = open_study(config, space)
    store = lifecycle.open_store(config)
    # Trials whose worker died (no heartbeat for the grace period, or its process has ended)
    # are failed now, and retried, rather than when some later trial happens to start; their
    # runs are closed now, not when this command ends.
    try:
        fail_stale_trials(study, storage)
        _fail_ended_trials(study)
    except Exception as exc:
        said = _storage_failure(config, exc)
        if said is None:
            raise
        raise said from None
    parent_id = _parent(study, created, store, prepared, dataset)
    lifecycle.close_dead_runs(store, _dead_runs(study))
    status = "FINISHED"
    try:
        store.set_tags(parent_id, {"trials_target": config.trials, "sampler": config.sampler,
                                   "pruner": config.pruner, "engine": ENGINE})
        baseline = space.baseline_params()
        if baseline and not study.get_trials(deepcopy=False):
            study.enqueue_trial(baseline, user_attrs={"baseline": True}, skip_if_exists=True)
        started = time.monotonic()
        bar = progress_bar(study, config, space) if config.progress else None
        try:
            remaining = config.trials - counted_trials(study)
            if remaining > 0 and config.workers == 1:
                # With one worker this process is the first: it saves a worker's start
                # (imports, data load) and runs trials until its memory has grown too much.
                ctx = Context(config, space, dataset, parent_id, store, storage,
                              lifecycle.base_params(dataset, ENGINE), bar=bar,
                              startup={"time_data_load_s": data_load_s}, factory=prepared.factory)
                optimize(study, ctx, remaining, config.timeout, callbacks=trial_callbacks)
            timeout = None if config.timeout is None else config.timeout - (time.monotonic() - started)
            if config.trials > counted_trials(study) and (timeout is None or timeout > 0):
                workers.run_workers(worker_main, config, timeout=timeout,
                                    remaining=lambda: config.trials - counted_trials(study),
                                    on_tick=bar.refresh if bar else None)
        finally:
            if bar is not None:
                bar.close()
    except BaseException as exc:
        status = lifecycle.ended_by(exc)
        raise
    finally:
        with lifecycle.settling(store, status):
            fail_stale_trials(study, storage)
            if config.objectives is not None and len(config.objectives) > 1:
                pareto.log_front(study, store, parent_id, config.objectives)
            else:
                log_study_plots(study, store, parent_id)
        lifecycle.finish(store, parent_id, config, status, dead_runs=_dead_runs(study))
    return study


def worker_main(config: StudyConfig, index: int, n_trials: int, done: Any) -> None:
    """One worker process: open the study, the store and the (cached) data, run n trials."""
    from allsearch.core import cli
    from allsearch.core.hardware import threads_per_worker
    from allsearch.training import user_model

    # Workers share the cores: more threads than cores per worker only adds switching.
    cli.quiet_libraries(threads=threads_per_worker(config.workers))
    space = lifecycle.study_space(config)
    factory = user_model.load(config.model)  # checked by the study's first process
    # Each trial samples from its own seeded stream (samplers.Reseed), or all would propose the same.
    study, _, storage = open_study(config, space, sampler_seed=config.seed + 1000 * (index + 1))
    store = lifecycle.open_store(config)
    loading = time.perf_counter()
    dataset = lifecycle.load_data(config, space)  # a cache hit: the main process decoded it
    ctx = Context(config, space, dataset, study.user_attrs[PARENT_ATTR], store, storage,
                  lifecycle.base_params(dataset, ENGINE),
                  startup={"time_data_load_s": time.perf_counter() - loading}, factory=factory)

    def count(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        with done.get_lock():
            done.value += 1

    with quiet_optuna():
        optimize(study, ctx, n_trials, None, callbacks=[count])
