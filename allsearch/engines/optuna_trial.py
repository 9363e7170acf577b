"""One Optuna trial: sample a configuration, reuse an identical earlier run or train it as a
tracked child run (tracked.run_tracked; over K folds with --cv, allsearch.training.folds), and settle
its objective and constraint values. `Context` is what a process needs to run trials
(allsearch.engines.optuna_engine builds it)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from allsearch.core.config import StudyConfig, parse_trainer
from allsearch.core.contract import COLLAPSED, CONFIG_KEY, Store
from allsearch.core.errors import StoreError
from allsearch.core.hardware import resolve_precision, start_tensorflow
from allsearch.core.objectives import FEASIBLE
from allsearch.core.space import SearchSpace
from allsearch.data.dataset import Dataset
from allsearch.engines import lifecycle, pareto
from allsearch.engines.progress import ProgressBar
from allsearch.tracking.tracked import config_key, find_duplicate, record_duplicate, run_tracked, trial_params
from allsearch.tracking.writer import Writer
from allsearch.training import standin
from allsearch.training.folds import CrossValidation, Folds, make_folds
from allsearch.training.user_model import PAPER, Factory

__all__ = ["Context", "objective", "ENGINE"]

ENGINE = "optuna"


@dataclass
class Context:
    """What a process needs to run trials; built once per process."""

    config: StudyConfig
    space: SearchSpace
    dataset: Dataset
    parent_id: str
    store: Store
    storage: optuna.storages.BaseStorage  # the study's (heartbeats through a proxy need it)
    base_params: dict[str, Any] = field(default_factory=dict)
    fatal: BaseException | None = None
    bar: ProgressBar | None = None
    # Seconds this process spent before its first trial (start-up, data load): logged on it.
    startup: dict[str, float] = field(default_factory=dict)
    # Writes each trial's figures and tables while the next one trains.
    writer: Writer = field(default_factory=Writer)
    folds: Folds | None = None  # --cv's, made at the first trial
    factory: Factory = PAPER  # the network every trial builds


def objective(ctx: Context, trial: optuna.Trial) -> float | list[float]:
    config = ctx.config
    trial.set_user_attr(lifecycle.PROCESS_ATTR, lifecycle.process_key())  # see _fail_ended_trials
    hparams = ctx.space.sample(trial)
    seeds = [config.seed + r for r in range(config.repeats)]
    precision, _ = resolve_precision(config.precision)  # lifecycle.prepare resolved "auto"
    key = config_key(hparams, seeds=seeds, dataset=ctx.dataset, precision=precision,
                     cv=config.cv, factory=ctx.factory)
    trial.set_user_attr("seed", config.seed)
    trial.set_user_attr("repeats", config.repeats)
    trial.set_user_attr("worker", lifecycle.worker_id())
    params = {**ctx.base_params, "trial_number": trial.number, "seed": config.seed,
              **({"cv": config.cv} if config.cv else {})}
    tags = {"trial_number": trial.number, "engine": ENGINE, "worker": lifecycle.worker_id()}
    try:
        previous = None if config.retrain_duplicates else find_duplicate(ctx.store, ctx.parent_id, key)
        if previous is not None:
            return _reuse(ctx, trial, previous, key=key, params=trial_params(
                hparams, precision=precision, factory=ctx.factory, params=params), tags=tags)
        seconds = parse_trainer(config.trainer)
        trainer = None if seconds is None else standin.stand_in(seconds)
        tracked = run_tracked(
            ctx.store, parent_id=ctx.parent_id, name=f"trial-{trial.number:04d}",
            dataset=ctx.dataset, hparams=hparams, seeds=seeds, params=params, tags=tags,
            precision=precision, first_callbacks=_pruning(config, trial, seconds),
            pruned_exceptions=(optuna.TrialPruned,),
            log_model=lambda metrics: _wants_model(config, trial.study, metrics),
            on_started=lambda run: trial.set_user_attr("mlflow_run_id", run.run_id),
            on_epoch=ctx.bar.on_epoch if ctx.bar is not None else None, trainer=trainer,
            timings=lifecycle.startup_timings(ctx.startup), writer=ctx.writer,
            cv=_cross_validation(ctx, trial), factory=ctx.factory)
    except optuna.TrialPruned:
        if config.constraints:  # no metrics: it violates every constraint
            pareto.set_constraints(trial, config.constraints, {})
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
    if tracked.collapsed:
        trial.set_user_attr("collapsed", True)
    return _settle(ctx, trial, tracked.run_id, tracked.metrics)


def _reuse(ctx: Context, trial: optuna.Trial, previous: Any, *, key: str,
           params: dict[str, Any], tags: dict[str, Any]) -> float | list[float]:
    """The duplicate rule (tracked.find_duplicate): a configuration trained before is not
    trained again; its run is recorded as this trial's, with the earlier metrics."""
    run_id = record_duplicate(ctx.store, parent_id=ctx.parent_id, name=f"trial-{trial.number:04d}",
                              params=params, tags={**tags, CONFIG_KEY: key}, source=previous)
    trial.set_user_attr("mlflow_run_id", run_id)
    trial.set_user_attr("duplicate_of", int(previous[2].get("duplicate_of")
                                            or previous[2].get("trial_number") or -1))
    if previous[2].get(COLLAPSED) == "true":
        trial.set_user_attr("collapsed", True)
    return _settle(ctx, trial, run_id, previous[1])


def _pruning(config: StudyConfig, trial: optuna.Trial, standin_seconds: float | None) -> list[Any]:
    """Pruning follows the first seed; later seeds of --repeats run to the end. The callback
    reports every epoch's val_accuracy to the storage (the progress line reads it), and
    prunes nothing under --pruner none. Optuna takes no reports of several objectives. Under
    --cv the reports are per fold (_cross_validation), none per epoch."""
    if len(config.objectives or ()) > 1 or config.cv:
        return []
    if standin_seconds is not None:
        return [standin.PruningReporter(trial)]
    start_tensorflow()  # before optuna_integration imports it, as trial.py does
    from optuna_integration import KerasPruningCallback

    return [KerasPruningCallback(trial, "val_accuracy")]


def _cross_validation(ctx: Context, trial: optuna.Trial) -> CrossValidation | None:
    """--cv's folds (made once per process) and the pruner's report after each fold: the
    running mean of the folds' validation accuracies at step = fold; a trial is pruned only
    while folds remain (after the last one it is complete)."""
    if not ctx.config.cv:
        return None
    if ctx.folds is None:
        ctx.folds = make_folds(ctx.dataset, ctx.config.cv)

    def report(fold: int, mean: float, last: bool) -> None:
        trial.report(mean, step=fold)
        if not last and trial.should_prune():
            raise optuna.TrialPruned(f"Trial was pruned after fold {fold}.")

    reports = len(ctx.config.objectives or ()) <= 1  # Optuna takes none of several objectives
    return CrossValidation(ctx.dataset, ctx.folds, report=report if reports else None)


def _settle(ctx: Context, trial: optuna.Trial, run_id: str, metrics: dict[str, float]
            ) -> float | list[float]:
    """The trial's objective value(s) from its run's metrics; its constraint values (Optuna's,
    which the sampler learns from, and a feasible tag on the run)."""
    config = ctx.config
    trial.set_user_attr("val_accuracy", metrics["val_accuracy"])
    trial.set_user_attr("test_accuracy", metrics.get("test_accuracy"))
    if config.constraints:
        feasible = pareto.set_constraints(trial, config.constraints, metrics)
        trial.set_user_attr(FEASIBLE, feasible)
        ctx.store.set_tags(run_id, {FEASIBLE: str(feasible).lower()})
    values = [float(metrics.get(name, math.nan)) for name in config.objectives or ("val_accuracy",)]
    return values[0] if len(values) == 1 else values


def _wants_model(config: StudyConfig, study: optuna.Study, metrics: dict[str, float]) -> bool:
    """--log-models all, or best: a trial more accurate than every earlier one (that meets
    every constraint, where there are constraints: the champion rule, lifecycle.finish)."""
    if config.log_models != "best":
        return config.log_models == "all"
    if config.constraints and any(v > 0 for v in pareto.constraint_values(config.constraints,
                                                                           metrics)):
        return False
    values = [t.user_attrs["val_accuracy"]
              for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if t.user_attrs.get("val_accuracy") is not None
              and t.user_attrs.get(FEASIBLE, True)]
    return metrics["val_accuracy"] > (max(values) if values else -math.inf)
