"""The Optuna engine: `python -m allsearch.study --trials 50`.

A study samples hyperparameters from a search/*.yaml space and trains each configuration
through allsearch.trial.run_trial; allsearch.tracking records one MLflow parent run per study
and one child run per trial (our own bridge: optuna-integration's MLflowCallback is
deprecated and serializes parallel trials). The Optuna storage is the source of truth: it
holds the parent run's id, so every worker, on any machine, nests its runs under the same
parent, and running the same command again resumes the study.
"""

from __future__ import annotations

import argparse
import itertools
import math
import multiprocessing
import os
import random
import socket
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import optuna
from optuna.trial import TrialState

from allsearch.data import Dataset, load_dataset
from allsearch.errors import ConfigError, SpaceError, StoreError
from allsearch.hardware import PRECISIONS, resolve_precision
from allsearch.space import HParams, SearchSpace, load_space
from allsearch.tracking import STORE_ERRORS, _first_line

__all__ = ["StudyConfig", "run", "summarize", "main", "DEFAULT_STORAGE", "PAPER_TABLE1_BEST"]

DEFAULT_STORAGE = "sqlite:///mlruns/optuna.db"
# The paper's Table 1, best row (one run): what every summary is compared with.
PAPER_TABLE1_BEST = {"val_accuracy": 0.80, "test_accuracy": 0.82}
Sampler = Literal["tpe", "random", "grid", "cmaes", "gp"]
Pruner = Literal["median", "hyperband", "none"]
SAMPLERS: tuple[str, ...] = ("tpe", "random", "grid", "cmaes", "gp")
PRUNERS: tuple[str, ...] = ("median", "hyperband", "none")
LOG_MODELS: tuple[str, ...] = ("best", "all", "none")
ENGINES: tuple[str, ...] = ("optuna", "keras-tuner")
TUNERS: tuple[str, ...] = ("hyperband", "bayesian", "random")  # KerasTuner's, for keras-tuner
PARENT_ATTR = "mlflow_parent_run_id"
ENGINE = "optuna"
# Which process on which machine ran a trial (a user attr and a run tag): where to look when
# a worker dies.
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class StudyConfig:
    """Every setting of a study; the CLI flags and run()'s keywords map one to one."""

    trials: int = 50
    timeout: float | None = None
    space: str = "paper"
    data: str | None = None
    study_name: str | None = None
    storage: str | None = None
    tracking_uri: str | None = None
    sampler: Sampler = "tpe"
    pruner: Pruner = "median"
    seed: int = 0
    repeats: int = 1
    workers: int = 1
    log_models: Literal["best", "all", "none"] = "best"
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    split_seed: int = 42
    trials_per_process: int = 1
    retrain_duplicates: bool = False
    progress: bool = True
    engine: Literal["optuna", "keras-tuner"] = "optuna"
    tuner: Literal["hyperband", "bayesian", "random"] = "hyperband"

    def validate(self) -> None:
        for name in ("trials", "repeats", "workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"--{name} must be a positive integer, got {value!r}")
        value = self.trials_per_process
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"--trials-per-process must be 0 (all in this process) or a "
                              f"positive integer, got {value!r}")
        if self.timeout is not None and not self.timeout > 0:
            raise ConfigError(f"--timeout must be a positive number of seconds, got {self.timeout!r}")
        for name, allowed in (("sampler", SAMPLERS), ("pruner", PRUNERS),
                              ("log_models", LOG_MODELS), ("precision", PRECISIONS),
                              ("engine", ENGINES), ("tuner", TUNERS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"--{name.replace('_', '-')} must be one of {list(allowed)}, "
                                  f"got {getattr(self, name)!r}")


# ------------------------------------------------------------------------- samplers, pruners


def make_sampler(name: str, space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        try:
            return optuna.samplers.GridSampler(space.grid(), seed=seed)
        except SpaceError as exc:
            raise ConfigError(f"--sampler grid: {exc}") from None
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        try:
            import torch  # noqa: F401  (GPSampler's own dependency)
        except ImportError:
            raise ConfigError("--sampler gp needs PyTorch: pip install torch "
                              "(or choose --sampler tpe)") from None
        return optuna.samplers.GPSampler(seed=seed)
    raise ConfigError(f"--sampler must be one of {list(SAMPLERS)}, got {name!r}")


def make_pruner(name: str, space: SearchSpace) -> optuna.pruners.BasePruner:
    if name == "median":
        # Five complete trials before judging, and never before epoch 3: early epochs are noisy.
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=_max_epochs(space),
                                              reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"--pruner must be one of {list(PRUNERS)}, got {name!r}")


def _max_epochs(space: SearchSpace) -> int:
    if any(p.name == "epochs" for p in space.params):
        return int(max(space.param("epochs").values()))
    return int(space.fixed.get("epochs", HParams().epochs))


# ------------------------------------------------------------------------- storage


def open_storage(url: str | None) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage with heartbeats: a trial whose worker died is failed and retried."""
    url = url or os.environ.get("ALLSEARCH_STORAGE") or DEFAULT_STORAGE
    from allsearch.tracking import _redact, absolute_sqlite

    if "://" not in url:
        raise ConfigError(f"--storage '{_redact(url)}' is not a database URL; use e.g. "
                          f"sqlite:///mlruns/optuna.db or postgresql://user@host/db")
    engine_kwargs: dict[str, Any] = {}
    try:
        if url.startswith("sqlite:///"):
            url = absolute_sqlite(url)
            # Several local workers share one file: wait for the lock instead of failing.
            engine_kwargs["connect_args"] = {"timeout": 60}
        else:
            engine_kwargs["pool_pre_ping"] = True
        interval, grace = _heartbeat_settings()
        for attempt in itertools.count(1):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return optuna.storages.RDBStorage(
                        url, engine_kwargs=engine_kwargs, heartbeat_interval=interval,
                        grace_period=grace,
                        heartbeat_stale_trial_callback=(
                            optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)))
            except Exception as exc:
                if attempt == SCHEMA_RACE_ATTEMPTS or not _lost_schema_race(exc):
                    raise
                # Workers started together on an empty database all create Optuna's tables;
                # the losers fail on the winner's rows. Once the winner commits, they exist.
                time.sleep(0.5 + random.random() * attempt)
    except Exception as exc:  # SQLAlchemy raises many types for a bad URL or a down server
        reason = _first_line(exc)[:200]
        raise StoreError(f"--storage '{_redact(url)}' cannot be opened ({_redact_text(reason, url)}); "
                         f"check the URL, that the server is up, and the credentials") from None


SCHEMA_RACE_ATTEMPTS = 5


def _lost_schema_race(exc: BaseException) -> bool:
    """Did creating Optuna's tables fail because another worker was creating them too?"""
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    text = str(exc).lower()
    if isinstance(exc, IntegrityError):
        return True
    return isinstance(exc, ProgrammingError | OperationalError) and (
        "already exists" in text or "deadlock detected" in text)


def _heartbeat_settings() -> tuple[int, int]:
    """(heartbeat interval, grace period) in seconds; the environment may shorten them (tests)."""
    interval = int(os.environ.get("ALLSEARCH_HEARTBEAT_S", "30"))
    grace = int(os.environ.get("ALLSEARCH_GRACE_S", str(max(120, 4 * interval))))
    return interval, grace


def _redact_text(text: str, url: str) -> str:
    from urllib.parse import urlsplit

    try:
        password = urlsplit(url).password
    except ValueError:
        return text
    return text.replace(password, "***") if password else text


def open_study(config: StudyConfig, space: SearchSpace, *, sampler_seed: int | None = None
               ) -> tuple[optuna.Study, bool]:
    """Create the study, or load it when it exists; says which."""
    storage = open_storage(config.storage)
    name = config.study_name or space.name
    # A grid sampler shuffles the grid by its seed and stores grid ids: every process must
    # share that seed, or an id names another point in each process (duplicates, gaps).
    seed = config.seed if sampler_seed is None or config.sampler == "grid" else sampler_seed
    sampler = make_sampler(config.sampler, space, seed)
    pruner = make_pruner(config.pruner, space)
    from allsearch.tracking import STORE_ERRORS, _redact

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            try:
                study = optuna.create_study(storage=storage, study_name=name, sampler=sampler,
                                            pruner=pruner, direction="maximize")
                return study, True
            except optuna.exceptions.DuplicatedStudyError:
                return optuna.load_study(study_name=name, storage=storage, sampler=sampler,
                                         pruner=pruner), False
        except STORE_ERRORS as exc:
            raise StoreError(f"study storage '{_redact(storage.url)}' cannot be written "
                             f"({_first_line(exc)}); check that its folder is writable and the "
                             f"disk not full, or pass another --storage") from None


# ------------------------------------------------------------------------- counting trials


def counted_trials(study: optuna.Study) -> int:
    """Trials that count towards --trials: finished ones and the ones that failed by error.

    A trial failed by Ctrl-C, or left RUNNING by a dead worker, is not counted: it is run again.
    """
    n = 0
    for trial in study.get_trials(deepcopy=False):
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
            n += 1
        elif trial.state == TrialState.FAIL and trial.user_attrs.get("error"):
            n += 1
    return n


class _StopAtTarget:
    """Stops every worker once the study holds `target` counted trials."""

    def __init__(self, target: int) -> None:
        self.target = target

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if counted_trials(study) >= self.target:
            study.stop()


# ------------------------------------------------------------------------- the objective


@dataclass
class _Context:
    """What a worker needs to run trials; built once per process."""

    config: StudyConfig
    space: SearchSpace
    dataset: Dataset
    parent_id: str
    tracker: Any  # allsearch.tracking.Tracker
    base_params: dict[str, Any] = field(default_factory=dict)
    fatal: BaseException | None = None


def _objective(ctx: _Context, trial: optuna.Trial) -> float:
    from optuna_integration import KerasPruningCallback

    from allsearch.tracked import run_tracked

    hparams = ctx.space.sample(trial)
    config = ctx.config
    trial.set_user_attr("seed", config.seed)
    trial.set_user_attr("repeats", config.repeats)
    trial.set_user_attr("worker", WORKER_ID)
    previous = None if config.retrain_duplicates else _same_configuration(trial, config)
    if previous is not None:
        return _reuse(ctx, trial, previous, hparams)
    # Pruning follows the first seed; later seeds of --repeats run to the end.
    pruning = ([KerasPruningCallback(trial, "val_accuracy")] if config.pruner != "none" else [])
    try:
        tracked = run_tracked(
            ctx.tracker, parent_id=ctx.parent_id, name=f"trial-{trial.number:04d}",
            dataset=ctx.dataset, hparams=hparams,
            seeds=[config.seed + r for r in range(config.repeats)],
            params={**ctx.base_params, "trial_number": trial.number, "seed": config.seed},
            tags={"trial_number": trial.number, "engine": ENGINE, "worker": WORKER_ID},
            precision=config.precision,
            first_callbacks=pruning, pruned_exceptions=(optuna.TrialPruned,),
            log_model=lambda value: config.log_models == "all" or (
                config.log_models == "best" and value > _best_value(trial.study)),
            on_started=lambda run: trial.set_user_attr("mlflow_run_id", run.run_id))
    except optuna.TrialPruned:
        raise
    except StoreError as exc:
        # Optuna would record this as one failed trial and go on; the store is broken, so stop.
        ctx.fatal = exc
        trial.study.stop()
        raise
    except Exception as exc:
        # Marks a failure of the trial itself: it counts towards --trials (an interrupted or
        # abandoned trial does not).
        trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:1000])
        raise
    trial.set_user_attr("test_accuracy", tracked.metrics["test_accuracy"])
    if tracked.model_uri:
        trial.set_user_attr("model_uri", tracked.model_uri)
    return tracked.value


def _same_configuration(trial: optuna.Trial, config: StudyConfig
                        ) -> optuna.trial.FrozenTrial | None:
    """A complete trial with these parameters, seed and repeats: training is deterministic on
    the CPU for a seed, so training it again would only repeat the same numbers."""
    for other in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if (other.params == trial.params and other.user_attrs.get("seed") == config.seed
                and other.user_attrs.get("repeats") == config.repeats
                and other.user_attrs.get("mlflow_run_id")):
            return other
    return None


def _reuse(ctx: _Context, trial: optuna.Trial, previous: optuna.trial.FrozenTrial,
           hparams: HParams) -> float:
    """Record a proposal of an already evaluated configuration without training it again."""
    from allsearch.tracked import record_duplicate

    source = previous.user_attrs.get("duplicate_of", previous.number)
    run_id = record_duplicate(
        ctx.tracker, parent_id=ctx.parent_id, name=f"trial-{trial.number:04d}",
        params={**hparams.to_dict(), "precision": ctx.config.precision, **ctx.base_params,
                "trial_number": trial.number, "seed": ctx.config.seed},
        tags={"trial_number": trial.number, "engine": ENGINE, "worker": WORKER_ID},
        source_run_id=previous.user_attrs["mlflow_run_id"], source_trial=source)
    trial.set_user_attr("mlflow_run_id", run_id)
    trial.set_user_attr("duplicate_of", source)
    if "test_accuracy" in previous.user_attrs:
        trial.set_user_attr("test_accuracy", previous.user_attrs["test_accuracy"])
    assert previous.value is not None
    return previous.value


def _best_value(study: optuna.Study) -> float:
    values = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if t.value is not None]
    return max(values) if values else -math.inf


# ------------------------------------------------------------------------- running a study


def run(*, trials: int = 50, timeout: float | None = None, space: str = "paper",
        data: str | None = None, study_name: str | None = None, storage: str | None = None,
        tracking_uri: str | None = None, sampler: Sampler = "tpe", pruner: Pruner = "median",
        seed: int = 0, repeats: int = 1, workers: int = 1,
        log_models: Literal["best", "all", "none"] = "best",
        precision: Literal["auto", "float32", "bfloat16"] = "auto", split_seed: int = 42,
        trials_per_process: int = 1, retrain_duplicates: bool = False, progress: bool = True,
        engine: Literal["optuna", "keras-tuner"] = "optuna",
        tuner: Literal["hyperband", "bayesian", "random"] = "hyperband",
        trial_callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = ()
        ) -> Any:
    """Run (or resume) a study until it holds `trials` finished trials; returns the study.

    Trials run in worker processes, a fresh one every `trials_per_process` trials, because
    TensorFlow keeps tens of MB per model.fit that clear_session does not return (see
    benchmarks/memory.py); `trials_per_process=0` with one worker runs every trial in this
    process. `trial_callbacks` are Optuna callbacks called after each trial in this process
    (only then). Returns the Optuna study, or with engine="keras-tuner" (search/*.yaml run by
    KerasTuner's `tuner`, see allsearch.kt_engine) a KerasTunerStudy.
    """
    config = StudyConfig(trials=trials, timeout=timeout, space=space, data=data,
                         study_name=study_name, storage=storage, tracking_uri=tracking_uri,
                         sampler=sampler, pruner=pruner, seed=seed, repeats=repeats,
                         workers=workers, log_models=log_models, precision=precision,
                         split_seed=split_seed, trials_per_process=trials_per_process,
                         retrain_duplicates=retrain_duplicates, progress=progress,
                         engine=engine, tuner=tuner)
    return run_config(config, trial_callbacks=trial_callbacks)


def run_config(config: StudyConfig, *, trial_callbacks: Sequence[Callable[..., None]] = ()
               ) -> Any:
    from allsearch.model import max_conv_layers
    from allsearch.tracking import Tracker

    config.validate()
    search_space = load_space(config.space)
    precision, precision_reason = resolve_precision(config.precision)
    # Workers get the resolved precision: every trial of the study trains alike.
    config = replace(config, study_name=config.study_name or _default_name(config, search_space),
                     precision=precision)
    if config.engine == "keras-tuner":
        return _run_keras_tuner(config, search_space, precision_reason)
    # Everything a user can get wrong is checked before any training starts.
    study, created = open_study(config, search_space)
    tracker = Tracker(config.study_name, tracking_uri=config.tracking_uri)
    dataset = _load_data(config, search_space)
    deepest = max_conv_layers(dataset.image_shape[0])
    _check_depth(search_space, deepest, dataset.image_shape[0])

    settings = {**_settings(config, search_space, dataset), "precision_reason": precision_reason}
    parent_id = _parent_run(study, created, tracker, config.study_name, settings)
    tracker.set_tags(parent_id, {"trials_target": config.trials, "sampler": config.sampler,
                                 "pruner": config.pruner})
    baseline = search_space.baseline_params()
    if baseline and not study.get_trials(deepcopy=False):
        study.enqueue_trial(baseline, user_attrs={"baseline": True}, skip_if_exists=True)

    remaining = config.trials - counted_trials(study)
    status = "FINISHED"
    try:
        if remaining > 0:
            # This process is still fresh: when it has no more trials to run than a worker
            # would, it runs them itself and saves a worker's start (imports, data load).
            if config.workers == 1 and (config.trials_per_process == 0
                                        or remaining <= config.trials_per_process):
                ctx = _Context(config, search_space, dataset, parent_id, tracker,
                               _base_params(dataset))
                _optimize(study, ctx, remaining, config.timeout, progress=config.progress,
                          extra_callbacks=trial_callbacks)
            else:
                _run_workers(config, study, remaining)
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        _finish_parent(study, tracker, parent_id, config, status)
    return study


def _default_name(config: StudyConfig, space: SearchSpace) -> str:
    """The space's name; a KerasTuner study is named after its tuner too (paper-hyperband),
    so that both engines' studies of one space sit side by side."""
    return space.name if config.engine == "optuna" else f"{space.name}-{config.tuner}"


def _run_keras_tuner(config: StudyConfig, space: SearchSpace, precision_reason: str) -> Any:
    from allsearch import kt_engine
    from allsearch.model import max_conv_layers
    from allsearch.tracking import Tracker

    assert config.study_name is not None
    tracker = Tracker(config.study_name, tracking_uri=config.tracking_uri)
    dataset = _load_data(config, space)
    _check_depth(space, max_conv_layers(dataset.image_shape[0]), dataset.image_shape[0])
    settings = {**_settings(config, space, dataset), "precision_reason": precision_reason,
                "engine": kt_engine.ENGINE, "tuner": config.tuner,
                "keras_tuner_dir": str(kt_engine.working_dir() / config.study_name)}
    parent_id = tracker.find_parent(config.study_name)
    if parent_id is None:
        parent_id = tracker.start_parent(config.study_name, settings)
    else:
        tracker.resume_parent(parent_id, settings)
    tracker.set_tags(parent_id, {"trials_target": config.trials, "engine": kt_engine.ENGINE,
                                 "tuner": config.tuner})
    status = "FINISHED"
    try:
        return kt_engine.run_keras_tuner(config, space, dataset, tracker, parent_id)
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        _finish_keras_tuner_parent(tracker, parent_id, config, status)


def _finish_keras_tuner_parent(tracker: Any, parent_id: str, config: StudyConfig,
                               status: str) -> None:
    """Counts, best trial, champion and leaderboard on the parent run, as for Optuna."""
    from allsearch import leaderboard

    try:
        runs = tracker.runs_frame(f"tags.`mlflow.parentRunId` = '{parent_id}'")
        if not runs.empty:
            states = runs["tags.state"].value_counts()
            tracker.log_metrics(parent_id, {f"n_{s.lower()}": int(states.get(s, 0))
                                            for s in ("COMPLETE", "PRUNED", "FAIL")})
            complete = runs[runs["tags.state"] == "COMPLETE"]
            if not complete.empty:
                best = complete.loc[complete["metrics.val_accuracy"].idxmax()]
                tracker.set_tags(parent_id, {"best.trial_number": best["tags.trial_number"],
                                             "best.mlflow_run_id": best["run_id"]})
                tracker.log_metrics(parent_id, {
                    "best_val_accuracy": float(best["metrics.val_accuracy"]),
                    "best_test_accuracy": float(best["metrics.test_accuracy"]),
                    "best_trial": float(best["tags.trial_number"])})
                model_uri = best.get("tags.model_uri")
                _register_champion(tracker, model_uri if isinstance(model_uri, str) else None,
                                   _model_name(config), parent_id)
        table = leaderboard.study_table(tracker, parent_id)
        if len(table):
            tracker.log_text(parent_id, table.to_csv(index=False), "leaderboard.csv")
            tracker.log_text(parent_id, leaderboard.render(table, "html"), "leaderboard.html")
    except STORE_ERRORS as exc:
        warnings.warn(f"could not write the study summary to MLflow ({_first_line(exc)})",
                      stacklevel=2)
        return
    tracker.end_run(parent_id, status)


def summarize_keras_tuner(result: Any) -> str:
    """The closing lines of a KerasTuner study, read back from MLflow."""
    runs = result.tracker.runs_frame(f"tags.`mlflow.parentRunId` = '{result.parent_id}'")
    states = runs["tags.state"].value_counts() if len(runs) else {}
    table = result.table()
    complete = table[table["State"] == "COMPLETE"] if len(table) else table
    lines = [f"study '{result.name}' (keras-tuner {result.tuner}): {len(runs)} trials "
             f"({states.get('COMPLETE', 0)} complete, {states.get('FAIL', 0)} failed)"]
    if len(complete):
        best = complete.iloc[0]
        params = " ".join(f"{k}={best[k]}" for k in ("epochs", "batch_size", "loss", "conv_layers")
                          if k in best)
        lines.append(f"best trial #{best['Trial']}: val_accuracy {best['Validation Accuracy']:.3f}"
                     f"  test_accuracy {best['Test Accuracy']:.3f}  {params}")
    lines.append(f"paper's Table 1 (one run):  val_accuracy {PAPER_TABLE1_BEST['val_accuracy']:.2f}"
                 f"  test_accuracy {PAPER_TABLE1_BEST['test_accuracy']:.2f}")
    lines.append(f"MLflow: experiment '{result.name}', parent run {result.parent_id}")
    return "\n".join(lines)


def _load_data(config: StudyConfig, space: SearchSpace) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skipped files are listed by `python -m allsearch.data`
        dataset = load_dataset(config.data, split_seed=config.split_seed)
    if space.uses_hog_pca():
        from allsearch.features import add_hog_pca

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = add_hog_pca(dataset)
    return dataset


def _check_depth(space: SearchSpace, deepest: int, size: int) -> None:
    values = ([space.fixed["conv_layers"]] if "conv_layers" in space.fixed else [])
    if any(p.name == "conv_layers" for p in space.params):
        values += space.param("conv_layers").values()
    too_deep = [v for v in values if v > deepest or v < 1]
    if too_deep:
        raise SpaceError(f"{space.source}: conv_layers {sorted(set(too_deep))} cannot be built "
                         f"on {size}x{size} images; allowed: 1 to {deepest}")


def _model_name(config: StudyConfig) -> str:
    return f"allsearch-{config.study_name}"


def _base_params(dataset: Dataset) -> dict[str, Any]:
    from allsearch.tracking import package_versions

    return {"engine": ENGINE, "variant": dataset.variant, "data_fingerprint": dataset.fingerprint,
            "split_seed": dataset.split_seed, "n_train": len(dataset.y_train),
            "class_names": list(dataset.class_names),
            **{f"version.{k}": v for k, v in package_versions().items()}}


def _settings(config: StudyConfig, space: SearchSpace, dataset: Dataset) -> dict[str, Any]:
    from allsearch.tracking import _redact

    return {"study_name": config.study_name, "space": space.name, "space_file": space.source,
            "objective": space.objective, "seed": config.seed, "repeats": config.repeats,
            "log_models": config.log_models, "precision": config.precision,
            "storage": _redact(config.storage or DEFAULT_STORAGE), "data": dataset.report.root,
            "variant": dataset.variant, "data_fingerprint": dataset.fingerprint,
            "split_seed": dataset.split_seed, "split_sizes": dataset.report.split_sizes,
            "duplicates_dropped": dataset.report.duplicates_dropped,
            "fixed": space.fixed, "baseline": space.baseline or {},
            "space_params": {p.name: {k: v for k, v in asdict(p).items() if v not in (None, (), False)}
                             for p in space.params}}


def _parent_run(study: optuna.Study, created: bool, tracker: Any, name: str,
                settings: dict[str, Any]) -> str:
    """The study's parent run: made by whoever created the study, found by everyone else."""
    parent_id = study.user_attrs.get(PARENT_ATTR)
    if parent_id is None and not created:
        for _ in range(60):  # the creating worker is making it right now
            time.sleep(1)
            parent_id = optuna.load_study(study_name=name, storage=study._storage
                                          ).user_attrs.get(PARENT_ATTR)
            if parent_id:
                break
    if parent_id is not None:
        try:
            tracker.resume_parent(parent_id, settings)
            return parent_id
        except Exception:
            warnings.warn(f"the study's MLflow parent run {parent_id} is gone from "
                          f"'{tracker.tracking_uri}'; starting a new one", stacklevel=2)
    parent_id = tracker.find_parent(name) or tracker.start_parent(name, settings)
    study.set_user_attr(PARENT_ATTR, parent_id)
    return parent_id


def _optimize(study: optuna.Study, ctx: _Context, n_trials: int, timeout: float | None, *,
              progress: bool, extra_callbacks: Sequence[Callable[..., None]] = ()) -> None:
    bar = _ProgressBar(study, ctx.config.trials) if progress else None
    callbacks: list[Any] = [_StopAtTarget(ctx.config.trials), *extra_callbacks]
    if bar is not None:
        callbacks.append(bar.on_trial)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study.optimize(lambda trial: _objective(ctx, trial), n_trials=n_trials,
                           timeout=timeout, catch=(Exception,), callbacks=callbacks,
                           gc_after_trial=True)
    except STORE_ERRORS as exc:
        raise StoreError(f"cannot write the study storage ({_first_line(exc)}); free disk "
                         f"space or fix its permissions, then run the same command to resume"
                         ) from None
    finally:
        if bar is not None:
            bar.close()
    if ctx.fatal is not None:
        raise ctx.fatal


class _ProgressBar:
    """A tqdm bar over counted trials, showing the best value so far."""

    def __init__(self, study: optuna.Study, target: int) -> None:
        from tqdm.auto import tqdm

        self.study = study
        self.bar = tqdm(total=target, initial=min(target, counted_trials(study)), unit="trial",
                        desc=f"study {study.study_name}", dynamic_ncols=True, file=sys.stderr)
        self.refresh()

    def refresh(self) -> None:
        done = min(self.bar.total, counted_trials(self.study))
        self.bar.update(done - self.bar.n)
        best = _best_value(self.study)
        if best > -math.inf:
            self.bar.set_postfix_str(f"best val_accuracy {best:.3f}")

    def on_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.refresh()

    def close(self) -> None:
        self.refresh()
        self.bar.close()


# ------------------------------------------------------------------------- local workers


def _run_workers(config: StudyConfig, study: optuna.Study, remaining: int) -> None:
    """Keep `workers` processes busy until the study holds its trials; each process runs at
    most `trials_per_process` trials, then a fresh one takes its place."""
    context = multiprocessing.get_context("spawn")
    per_process = config.trials_per_process or remaining
    started = time.monotonic()
    running: list[tuple[Any, int, Any]] = []  # (process, trials assigned, trials done counter)
    crashes: list[int] = []
    bar = _ProgressBar(study, config.trials) if config.progress else None
    index = 0
    try:
        while True:
            for entry in [e for e in running if not e[0].is_alive()]:
                running.remove(entry)
                code = entry[0].exitcode
                if code == 130:
                    raise KeyboardInterrupt
                crashes = crashes + [code] if code != 0 else []
                if len(crashes) >= 3:
                    raise StoreError(f"worker processes keep ending with an error (exit codes "
                                     f"{crashes}); run with --trials-per-process 0 --debug to see it")
            in_flight = sum(assigned - done.value for _, assigned, done in running)
            need = config.trials - counted_trials(study) - in_flight
            timed_out = config.timeout is not None and time.monotonic() - started > config.timeout
            while need > 0 and len(running) < config.workers and not timed_out:
                n = min(per_process, need)
                done = context.Value("i", 0)
                process = context.Process(target=_worker_main, args=(config, index, n, done))
                process.start()
                running.append((process, n, done))
                index += 1
                need -= n
            if not running:
                break
            time.sleep(0.5)
            if bar is not None:
                bar.refresh()
    except KeyboardInterrupt:
        for process, _, _ in running:
            process.join(timeout=60)  # the workers got the same Ctrl-C and end their trial
        raise
    finally:
        if bar is not None:
            bar.close()


def _worker_main(config: StudyConfig, index: int, n_trials: int, done: Any) -> None:
    from allsearch import _cli
    from allsearch.hardware import threads_per_worker
    from allsearch.tracking import Tracker

    # Workers share the cores: more threads than cores per worker only adds switching.
    _cli.quiet_libraries(threads=threads_per_worker(config.workers))
    space = load_space(config.space)
    # Each worker samples from its own seeded stream, or all would propose the same trial.
    study, _ = open_study(config, space, sampler_seed=config.seed + 1000 * (index + 1))
    tracker = Tracker(config.study_name, tracking_uri=config.tracking_uri)
    dataset = _load_data(config, space)  # a cache hit: the main process decoded it
    ctx = _Context(config, space, dataset, study.user_attrs[PARENT_ATTR], tracker,
                   _base_params(dataset))
    def count(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        with done.get_lock():
            done.value += 1

    try:
        _optimize(study, ctx, n_trials, None, progress=False, extra_callbacks=[count])
    except KeyboardInterrupt:
        sys.exit(130)


# ------------------------------------------------------------------------- the parent run


def _finish_parent(study: optuna.Study, tracker: Any, parent_id: str, config: StudyConfig,
                   status: str) -> None:
    """Best trial, plots, leaderboard and champion on the parent run; then its status."""
    try:
        _summarize_on_parent(study, tracker, parent_id, config)
    except STORE_ERRORS as exc:
        warnings.warn(f"could not write the study summary to MLflow ({_first_line(exc)})",
                      stacklevel=2)
        return
    try:
        _reconcile_runs(study, tracker)
    finally:
        tracker.end_run(parent_id, status)


def _reconcile_runs(study: optuna.Study, tracker: Any) -> None:
    """Child runs of trials that ended without closing their run (a killed worker, a
    heartbeat failure) are marked KILLED, so no run shows RUNNING forever."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        run_id = trial.user_attrs.get("mlflow_run_id")
        if not run_id or trial.user_attrs.get("error"):
            continue
        try:
            if tracker.client.get_run(run_id).info.status == "RUNNING":
                tracker.set_tags(run_id, {"state": "KILLED",
                                          "error": "the worker stopped during this trial"})
                tracker.end_run(run_id, "KILLED")
        except STORE_ERRORS:
            continue


def _summarize_on_parent(study: optuna.Study, tracker: Any, parent_id: str,
                         config: StudyConfig) -> None:
    from allsearch import leaderboard

    counts = {state.name: len(study.get_trials(deepcopy=False, states=(state,)))
              for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    tracker.log_metrics(parent_id, {f"n_{k.lower()}": v for k, v in counts.items()})
    best = _best_trial(study)
    if best is not None:
        tracker.set_tags(parent_id, {f"best.{k}": v for k, v in best.params.items()}
                         | {"best.trial_number": best.number,
                            "best.mlflow_run_id": best.user_attrs.get("mlflow_run_id", "")})
        tracker.log_metrics(parent_id, {"best_val_accuracy": best.value,
                                        "best_test_accuracy": best.user_attrs.get(
                                            "test_accuracy", math.nan),
                                        "best_trial": best.number})
        _register_champion(tracker, best.user_attrs.get("model_uri"), _model_name(config),
                           parent_id)
    _log_study_plots(study, tracker, parent_id)
    table = leaderboard.study_table(tracker, parent_id)
    if len(table):
        tracker.log_text(parent_id, table.to_csv(index=False), "leaderboard.csv")
        tracker.log_text(parent_id, leaderboard.render(table, "html"), "leaderboard.html")


def _best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:
        return None


def _register_champion(tracker: Any, model_uri: str | None, model_name: str,
                       parent_id: str) -> None:
    """Point `models:/<name>@champion` at the best trial's model, unless it already does."""
    if not model_uri:
        return
    current = tracker.client.get_run(parent_id).data.tags.get("champion.model_uri")
    if current == model_uri:
        return
    version = tracker.register_champion(model_uri, model_name)
    tracker.set_tags(parent_id, {"champion.model_uri": model_uri,
                                 "champion": f"models:/{model_name}@champion (version {version})"})


def _log_study_plots(study: optuna.Study, tracker: Any, parent_id: str) -> None:
    from optuna.visualization import matplotlib as optuna_plots

    import allsearch.reports  # noqa: F401  (selects the Agg backend)

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    plots = [("optimization_history.png", optuna_plots.plot_optimization_history)]
    if len(complete) >= 2 and len({tuple(sorted(t.params.items())) for t in complete}) >= 2:
        plots.append(("param_importances.png", optuna_plots.plot_param_importances))
    for name, plot in plots:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = plot(study)
            figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
            figure.set_size_inches(8, 4.5)
            figure.tight_layout()
            tracker.log_figure(parent_id, figure, name)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            # Importances need variation among complete trials; say why it is missing.
            tracker.log_text(parent_id, f"{name} not drawn: {exc}\n", name.replace(".png", ".txt"))


# ------------------------------------------------------------------------- summary and CLI


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
        return (f"val_accuracy {t.value:.3f}  test_accuracy "
                f"{test:.3f}  {params}" if test is not None else f"val_accuracy {t.value:.3f}  {params}")

    best = _best_trial(study)
    if best is not None:
        lines.append(f"best trial #{best.number}:      {describe(best)}")
    baseline = next((t for t in trials if t.user_attrs.get("baseline")), None)
    if baseline is not None and baseline.state == TrialState.COMPLETE:
        lines.append(f"paper's config, #{baseline.number}: {describe(baseline)}")
    elif baseline is not None:
        lines.append(f"paper's config, #{baseline.number}: {baseline.state.name}")
    lines.append(f"paper's Table 1 (one run):  val_accuracy {PAPER_TABLE1_BEST['val_accuracy']:.2f}"
                 f"  test_accuracy {PAPER_TABLE1_BEST['test_accuracy']:.2f}")
    parent = study.user_attrs.get(PARENT_ATTR)
    if parent:
        lines.append(f"MLflow: experiment '{study.study_name}', parent run {parent}; browse with: "
                     f"python -m allsearch.ui")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from allsearch import _cli

    p = argparse.ArgumentParser(
        prog="python -m allsearch.study",
        description="Run or resume an Optuna study of the paper's CNN, tracked in MLflow "
                    "(one parent run per study, one child run per trial).")
    p.add_argument("--trials", type=int, default=50,
                   help="finished trials the study should hold; a resumed study runs only the "
                        "missing ones (default 50)")
    p.add_argument("--timeout", type=float, default=None,
                   help="stop starting new trials after this many seconds")
    p.add_argument("--space", default="paper",
                   help="search-space YAML file, or a name in search/ (default: paper)")
    p.add_argument("--data", default=None,
                   help="folder of class folders (default: data/leukemia/Original, "
                        "downloaded from Kaggle when missing)")
    p.add_argument("--study-name", default=None,
                   help="study name, also the MLflow experiment (default: the space's name)")
    p.add_argument("--storage", default=None,
                   help=f"Optuna storage URL (default: $ALLSEARCH_STORAGE or {DEFAULT_STORAGE}; "
                        f"postgresql://... for many machines)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or "
                        "sqlite:///mlruns/mlflow.db)")
    p.add_argument("--engine", default="optuna", choices=ENGINES,
                   help="optuna (default) or keras-tuner: the same space, trial code and MLflow "
                        "layout through KerasTuner")
    p.add_argument("--tuner", default="hyperband", choices=TUNERS,
                   help="KerasTuner's search with --engine keras-tuner: hyperband (default), "
                        "bayesian, random")
    p.add_argument("--sampler", default="tpe", choices=SAMPLERS,
                   help="tpe (default), random, grid, cmaes, gp (gp needs PyTorch)")
    p.add_argument("--pruner", default="median", choices=PRUNERS,
                   help="stop unpromising trials per epoch: median (default), hyperband, none")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler and of training")
    p.add_argument("--repeats", type=int, default=1,
                   help="train each configuration K times with seeds seed..seed+K-1; the "
                        "objective is the mean validation accuracy (default 1)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes on this machine sharing the study (default 1)")
    p.add_argument("--trials-per-process", type=int, default=1,
                   help="trials a worker process runs before a fresh one replaces it "
                        "(default 1: TensorFlow keeps memory after every fit); 0 runs every "
                        "trial in this process (with --workers 1)")
    p.add_argument("--retrain-duplicates", action="store_true",
                   help="train a configuration again when the sampler proposes one that already "
                        "completed with the same seed (by default its result is reused: training "
                        "is deterministic on a CPU; use this where it is not, e.g. on a GPU)")
    p.add_argument("--log-models", default="best", choices=LOG_MODELS,
                   help="log the Keras model of each new best trial (best, default), every "
                        "complete trial (all), or none")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="training precision; auto (default): bfloat16 (mixed, output layer in "
                        "float32) where the CPU computes bf16 natively, else float32")
    p.add_argument("--split-seed", type=int, default=42,
                   help="seed of the 70/15/15 split (default 42)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _cli.add_debug_flag(p)
    return p


def main(argv: list[str] | None = None) -> int:
    from allsearch import _cli

    def execute(args: argparse.Namespace) -> int:
        started = time.perf_counter()
        study = run(trials=args.trials, timeout=args.timeout, space=args.space, data=args.data,
                    study_name=args.study_name, storage=args.storage,
                    tracking_uri=args.tracking_uri, sampler=args.sampler, pruner=args.pruner,
                    seed=args.seed, repeats=args.repeats, workers=args.workers,
                    log_models=args.log_models, precision=args.precision,
                    split_seed=args.split_seed, trials_per_process=args.trials_per_process,
                    retrain_duplicates=args.retrain_duplicates, progress=not args.no_progress,
                    engine=args.engine, tuner=args.tuner)
        print(summarize(study) if isinstance(study, optuna.Study) else summarize_keras_tuner(study))
        print(f"wall time: {time.perf_counter() - started:.0f} s")
        return 0

    return _cli.main_wrapper(execute, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
