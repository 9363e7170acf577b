"""The KerasTuner engine: `python -m allsearch.study --engine keras-tuner --tuner hyperband`.

KerasTuner has no MLflow integration, so this module gives it ours: the same allsearch/spaces/*.yaml
(translated once into KerasTuner hyperparameters), the same factory and trial code
(allsearch.tracking.tracked.run_tracked -> allsearch.training.trial.run_trial), and the same MLflow layout as the
Optuna engine (one parent run per study, one child run per trial, the same params, metrics and
tags, `engine=keras-tuner`), so the leaderboard and the MLflow UI read both alike.

KerasTuner keeps its own state (the oracle, one folder per trial) under
mlruns/keras-tuner/<study>/: running the same command again reloads it and runs only the
missing trials. The paper's baseline is trial 0, trained before the tuner starts (KerasTuner's
oracles cannot be given a first configuration); the tuner's trials are numbered from 1.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from allsearch.core.config import TUNERS, StudyConfig
from allsearch.core.contract import STATE, Store, folder_name
from allsearch.core.errors import ConfigError, StoreError
from allsearch.core.hardware import resolve_precision
from allsearch.core.space import ParamSpec, SearchSpace
from allsearch.engines import lifecycle
from allsearch.engines.lifecycle import Prepared
from allsearch.engines.progress import paper_line
from allsearch.tracking.tracked import config_key, find_duplicate, record_duplicate, run_tracked, trial_params
from allsearch.training.user_model import PAPER, Factory

if TYPE_CHECKING:
    import keras_tuner

    from allsearch.data.dataset import Dataset

__all__ = ["ENGINE", "KerasTunerStudy", "hyperparameters", "make_oracle", "run", "working_dir",
           "summarize"]

ENGINE = "keras-tuner"
OBJECTIVE = "val_accuracy"
# Hyperband's trial budget per round comes from its brackets; these are KerasTuner's defaults.
HYPERBAND_FACTOR = 3


@dataclasses.dataclass
class KerasTunerStudy:
    """What a finished (or interrupted) KerasTuner study left: enough for the summary."""

    name: str
    tuner: str
    parent_id: str
    tracker: Store  # an allsearch.tracking.tracking.Tracker, or a Recorder with record=

    def table(self) -> Any:
        from allsearch.readers import leaderboard

        return leaderboard.study_table(self.tracker, self.parent_id)


def working_dir() -> Path:
    """Where KerasTuner writes its oracle and trial folders (never the repository root)."""
    return Path(os.environ.get("ALLSEARCH_KERAS_TUNER_DIR", "mlruns/keras-tuner")).resolve()


def hyperparameters(space: SearchSpace, *, tuner: str) -> keras_tuner.HyperParameters:
    """The space's sampled parameters as KerasTuner hyperparameters (translated once).

    Under Hyperband the number of epochs is the tuner's own resource, so `epochs` is not
    sampled: Hyperband trains each configuration for the epochs its bracket gives, up to the
    space's largest epoch count.
    """
    from allsearch.core.hardware import start_tensorflow

    start_tensorflow()
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    for spec in space.params:
        if tuner == "hyperband" and spec.name == "epochs":
            continue
        _declare(hp, spec)
    return hp


def _declare(hp: keras_tuner.HyperParameters, spec: ParamSpec) -> None:
    sampling = "log" if spec.log else "linear"
    if spec.type == "categorical":
        kinds = {type(c) for c in spec.choices}
        if len(kinds) > 1:
            raise ConfigError(f"{spec.name}: KerasTuner needs choices of one type, got "
                              f"{list(spec.choices)}")
        if all(isinstance(c, bool) for c in spec.choices):
            # KerasTuner's Choice turns booleans into 0/1; Boolean keeps them true/false.
            hp.Boolean(spec.name, default=bool(spec.choices[0]))
        else:
            hp.Choice(spec.name, list(spec.choices))
    elif spec.type == "int":
        # KerasTuner reads `step` as a factor under log sampling: leave it out there.
        step = None if spec.log else int(spec.step or 1)
        low, high = spec.bounds
        hp.Int(spec.name, int(low), int(high), step=step, sampling=sampling)
    else:
        low, high = spec.bounds
        hp.Float(spec.name, float(low), float(high), step=spec.step, sampling=sampling)


def run(prepared: Prepared) -> KerasTunerStudy:
    """Run the baseline, then the tuner, until the study holds `config.trials` trials."""
    config, space = prepared.config, prepared.space
    if config.workers != 1:
        raise ConfigError("--engine keras-tuner runs one worker; use --engine optuna for "
                          "--workers > 1")
    if config.record is not None:
        raise ConfigError("--engine keras-tuner reads its runs back from MLflow: it cannot "
                          "--record; use --engine optuna to record a study")
    loading = time.perf_counter()
    dataset = lifecycle.load_data(config, space, prepared.factory)
    startup = {"time_data_load_s": time.perf_counter() - loading}
    store = lifecycle.open_store(config)
    parent_id = lifecycle.start(store, prepared, dataset,
                                extra={"keras_tuner_dir": str(working_dir() / folder_name(
                                    str(config.study_name)))})
    status = "FINISHED"
    try:
        store.set_tags(parent_id, {"trials_target": config.trials, "engine": ENGINE,
                                   "tuner": config.tuner})
        _search(config, space, dataset, store, parent_id, startup, prepared.factory)
    except BaseException as exc:
        status = lifecycle.ended_by(exc)
        raise
    finally:
        # One process runs every trial: a run still RUNNING now was cut off.
        running = store.runs_frame(f"tags.`mlflow.parentRunId` = '{parent_id}' and "
                                   f"attributes.status = 'RUNNING'")
        lifecycle.finish(store, parent_id, config, status,
                         dead_runs=list(running["run_id"]) if len(running) else [])
    return KerasTunerStudy(str(config.study_name), config.tuner, parent_id, store)


def _search(config: StudyConfig, space: SearchSpace, dataset: Dataset, store: Store,
            parent_id: str, startup: dict[str, float], factory: Factory) -> None:
    started = time.monotonic()
    done = _finished_trials(store, parent_id)
    base_params = {**lifecycle.base_params(dataset, ENGINE), "tuner": config.tuner}
    baseline = space.baseline_params()
    tuner_trials = config.trials
    if baseline:
        tuner_trials -= 1
        if 0 not in done:
            _run_one(config, space, dataset, store, parent_id, base_params, startup, number=0,
                     values=baseline, best=-math.inf, factory=factory)
    if tuner_trials > 0:
        deadline = None if config.timeout is None else started + config.timeout
        tuner = _make_tuner(config, space, dataset, store, parent_id, base_params, startup,
                            max_trials=tuner_trials, deadline=deadline, factory=factory)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                tuner.search(verbose=0)
            except Exception as exc:
                if isinstance(exc.__cause__, StoreError):
                    raise exc.__cause__ from None
                raise


def _complete_runs(store: Store, parent_id: str) -> Any:
    return store.runs_frame(f"tags.`mlflow.parentRunId` = '{parent_id}' and "
                            f"tags.{STATE} = 'COMPLETE'")


def _finished_trials(store: Store, parent_id: str) -> set[int]:
    runs = _complete_runs(store, parent_id)
    return set() if runs.empty else {int(n) for n in runs["tags.trial_number"].dropna()}


def _best_so_far(store: Store, parent_id: str) -> float:
    runs = _complete_runs(store, parent_id)
    if runs.empty or "metrics.val_accuracy" not in runs:
        return -math.inf
    return float(runs["metrics.val_accuracy"].max())


def _run_one(config: StudyConfig, space: SearchSpace, dataset: Dataset, store: Store,
             parent_id: str, base_params: dict[str, Any], startup: dict[str, float], *,
             number: int,
             values: dict[str, Any], best: float, epochs: int | None = None,
             factory: Factory = PAPER) -> float:
    """One configuration as one child run, exactly as the Optuna engine records it."""
    hparams = space.hparams(values)
    if epochs is not None:  # Hyperband's budget for this trial
        hparams = dataclasses.replace(hparams, epochs=epochs)
    seeds = [config.seed + r for r in range(config.repeats)]
    precision, _ = resolve_precision(config.precision)  # lifecycle.prepare resolved "auto"
    key = config_key(hparams, seeds=seeds, dataset=dataset, precision=precision,
                     factory=factory)
    params = {**base_params, "trial_number": number, "seed": config.seed}
    tags = {"trial_number": number, "engine": ENGINE, "worker": lifecycle.worker_id()}
    previous = None if config.retrain_duplicates else find_duplicate(store, parent_id, key)
    if previous is not None:
        record_duplicate(store, parent_id=parent_id, name=f"trial-{number:04d}",
                         params=trial_params(hparams, precision=precision,
                                             factory=factory, params=params),
                         tags=tags, source=previous)
        return float(previous[1]["val_accuracy"])
    tracked = run_tracked(
        store, parent_id=parent_id, name=f"trial-{number:04d}", dataset=dataset,
        hparams=hparams, seeds=seeds, params=params, tags=tags, precision=precision,
        log_model=lambda metrics: config.log_models == "all" or (
            config.log_models == "best" and metrics["val_accuracy"] > best),
        timings=lifecycle.startup_timings(startup), factory=factory)
    return tracked.value


def _make_tuner(config: StudyConfig, space: SearchSpace, dataset: Dataset, store: Store,
                parent_id: str, base_params: dict[str, Any], startup: dict[str, float], *,
                max_trials: int, deadline: float | None = None,
                factory: Factory = PAPER) -> keras_tuner.Tuner:
    import keras_tuner

    hp = hyperparameters(space, tuner=config.tuner)
    oracle = make_oracle(config, space, hp, max_trials=max_trials, deadline=deadline)

    class TrackedTuner(keras_tuner.Tuner):
        """Trains through allsearch's trial code and logs each trial as an MLflow child run."""

        def run_trial(self, trial: keras_tuner.engine.trial.Trial, *args: Any, **kwargs: Any
                      ) -> dict[str, float]:
            values = {name: trial.hyperparameters.get(name) for name in hp.values}
            epochs = trial.hyperparameters.values.get("tuner/epochs")
            try:
                value = _run_one(config, space, dataset, store, parent_id, base_params, startup,
                                 number=int(trial.trial_id) + 1, values=values,
                                 best=_best_so_far(store, parent_id),
                                 epochs=int(epochs) if epochs is not None else None,
                                 factory=factory)
            except StoreError as exc:
                # KerasTuner records any other exception as a failed trial and goes on; a
                # broken store would fail every trial the same way, so stop the search.
                raise keras_tuner.errors.FatalError(str(exc)) from exc
            return {OBJECTIVE: value}

    return TrackedTuner(oracle=oracle, directory=str(working_dir()),
                        project_name=folder_name(str(config.study_name)), overwrite=False)


def make_oracle(config: StudyConfig, space: SearchSpace, hp: keras_tuner.HyperParameters, *,
                max_trials: int, deadline: float | None = None) -> keras_tuner.Oracle:
    """The tuner's oracle, which proposes no trial once the study holds `max_trials` of them
    (Hyperband has no such argument) or once `deadline` (time.monotonic(), --timeout) passed.

    Through KerasTuner's public extension point: an oracle's `populate_space` answers
    "STOPPED" when no further trial should be created."""
    import keras_tuner

    oracles = {"hyperband": keras_tuner.oracles.HyperbandOracle,
               "bayesian": keras_tuner.oracles.BayesianOptimizationOracle,
               "random": keras_tuner.oracles.RandomSearchOracle}
    if config.tuner not in oracles:
        raise ConfigError(f"--tuner must be one of {list(TUNERS)}, got {config.tuner!r}")
    oracle: Any = oracles[config.tuner]  # KerasTuner has no type hints: a class of its own

    class Bounded(oracle):
        def populate_space(self, trial_id: str) -> dict[str, Any]:
            if len(self.trials) >= max_trials or (deadline is not None
                                                  and time.monotonic() > deadline):
                return {"status": keras_tuner.engine.trial.TrialStatus.STOPPED, "values": None}
            return super().populate_space(trial_id)

    common = {"objective": keras_tuner.Objective(OBJECTIVE, direction="max"),
              "hyperparameters": hp, "seed": config.seed, "tune_new_entries": False,
              "allow_new_entries": False}
    if config.tuner == "hyperband":
        return Bounded(max_epochs=space.max_epochs(), factor=HYPERBAND_FACTOR, **common)
    return Bounded(max_trials=max_trials, **common)


def summarize(result: KerasTunerStudy) -> str:
    """The closing lines of a KerasTuner study, read back from MLflow."""
    runs = result.tracker.runs_frame(f"tags.`mlflow.parentRunId` = '{result.parent_id}'")
    states = runs[f"tags.{STATE}"].value_counts() if len(runs) else {}
    table = result.table()
    complete = table[table["State"] == "COMPLETE"] if len(table) else table
    lines = [f"study '{result.name}' (keras-tuner {result.tuner}): {len(runs)} trials "
             f"({states.get('COMPLETE', 0)} complete, {states.get('FAIL', 0)} failed)"]
    if len(complete):
        best = complete.iloc[0]
        # The leaderboard's hyperparameter columns (a network of one's own: its knobs too).
        shown = table.columns[:table.columns.get_loc("Validation Accuracy")]
        params = " ".join(f"{k}={best[k]}" for k in shown if k != "Variant")
        lines.append(f"best trial #{best['Trial']}: val_accuracy {best['Validation Accuracy']:.3f}"
                     f"  test_accuracy {best['Test Accuracy']:.3f}  {params}")
    lines.append(paper_line())
    lines.append(f"MLflow: experiment '{result.name}', parent run {result.parent_id}")
    return "\n".join(lines)
