"""The KerasTuner engine: `python -m allsearch.study --engine keras-tuner --tuner hyperband`.

KerasTuner has no MLflow integration, so this module gives it ours: the same search/*.yaml
(translated once into KerasTuner hyperparameters), the same factory and trial code
(allsearch.tracked.run_tracked -> allsearch.trial.run_trial), and the same MLflow layout as the
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

from allsearch.errors import ConfigError, StoreError
from allsearch.space import ParamSpec, SearchSpace

if TYPE_CHECKING:
    import keras_tuner

    from allsearch.data import Dataset
    from allsearch.study import StudyConfig
    from allsearch.tracking import Tracker

__all__ = ["TUNERS", "ENGINE", "KerasTunerStudy", "hyperparameters", "run_keras_tuner",
           "working_dir"]

ENGINE = "keras-tuner"
TUNERS: tuple[str, ...] = ("hyperband", "bayesian", "random")
OBJECTIVE = "val_accuracy"
# Hyperband's trial budget per round comes from its brackets; these are KerasTuner's defaults.
HYPERBAND_FACTOR = 3


@dataclasses.dataclass
class KerasTunerStudy:
    """What a finished (or interrupted) KerasTuner study left: enough for the summary."""

    name: str
    tuner: str
    parent_id: str
    tracker: Any  # allsearch.tracking.Tracker

    def table(self) -> Any:
        from allsearch import leaderboard

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
        hp.Int(spec.name, int(spec.low), int(spec.high), step=step, sampling=sampling)
    else:
        hp.Float(spec.name, float(spec.low), float(spec.high), step=spec.step, sampling=sampling)


def run_keras_tuner(config: StudyConfig, space: SearchSpace, dataset: Dataset,
                    tracker: Tracker, parent_id: str) -> KerasTunerStudy:
    """Run the baseline, then the tuner, until the study holds `config.trials` trials."""
    from allsearch import study as optuna_engine

    if config.workers != 1:
        raise ConfigError("--engine keras-tuner runs one worker; use --engine optuna for "
                          "--workers > 1")
    started = time.monotonic()
    done = _finished_trials(tracker, parent_id)
    base_params = {**optuna_engine._base_params(dataset), "engine": ENGINE,
                   "tuner": config.tuner}
    baseline = space.baseline_params()
    tuner_trials = config.trials
    if baseline:
        tuner_trials -= 1
        if 0 not in done:
            _run_one(config, space, dataset, tracker, parent_id, base_params, number=0,
                     values=baseline, best=-math.inf)
    if tuner_trials > 0:
        deadline = None if config.timeout is None else started + config.timeout
        tuner = _make_tuner(config, space, dataset, tracker, parent_id, base_params,
                            max_trials=tuner_trials, deadline=deadline)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                tuner.search(verbose=0)
            except Exception as exc:
                if isinstance(exc.__cause__, StoreError):
                    raise exc.__cause__ from None
                raise
    return KerasTunerStudy(config.study_name or space.name, config.tuner, parent_id, tracker)


def _finished_trials(tracker: Tracker, parent_id: str) -> set[int]:
    runs = tracker.runs_frame(f"tags.`mlflow.parentRunId` = '{parent_id}' and "
                              f"tags.state = 'COMPLETE'")
    if runs.empty:
        return set()
    return {int(n) for n in runs["tags.trial_number"].dropna()}


def _best_so_far(tracker: Tracker, parent_id: str) -> float:
    runs = tracker.runs_frame(f"tags.`mlflow.parentRunId` = '{parent_id}' and "
                              f"tags.state = 'COMPLETE'")
    if runs.empty or "metrics.val_accuracy" not in runs:
        return -math.inf
    return float(runs["metrics.val_accuracy"].max())


def _run_one(config: StudyConfig, space: SearchSpace, dataset: Dataset, tracker: Tracker,
             parent_id: str, base_params: dict[str, Any], *, number: int,
             values: dict[str, Any], best: float, epochs: int | None = None) -> float:
    """One configuration as one child run, exactly as the Optuna engine records it."""
    from allsearch.study import WORKER_ID
    from allsearch.tracked import record_duplicate, run_tracked

    hparams = space.hparams(values)
    if epochs is not None:  # Hyperband's budget for this trial
        hparams = dataclasses.replace(hparams, epochs=epochs)
    params = {**base_params, "trial_number": number, "seed": config.seed}
    tags = {"trial_number": number, "engine": ENGINE, "worker": WORKER_ID}
    previous = None if config.retrain_duplicates else _same_configuration(
        tracker, parent_id, hparams, config)
    if previous is not None:
        record_duplicate(tracker, parent_id=parent_id, name=f"trial-{number:04d}",
                         params={**hparams.to_dict(), "precision": config.precision, **params},
                         tags=tags, source_run_id=previous["run_id"],
                         source_trial=previous.get("tags.duplicate_of")
                         or previous["tags.trial_number"])
        return float(previous["metrics.val_accuracy"])
    tracked = run_tracked(
        tracker, parent_id=parent_id, name=f"trial-{number:04d}", dataset=dataset,
        hparams=hparams, seeds=[config.seed + r for r in range(config.repeats)],
        params=params, tags=tags, precision=config.precision,
        log_model=lambda value: config.log_models == "all" or (
            config.log_models == "best" and value > best))
    if tracked.model_uri:
        tracker.set_tags(tracked.run_id, {"model_uri": tracked.model_uri})
    return tracked.value


def _same_configuration(tracker: Tracker, parent_id: str, hparams: Any,
                        config: StudyConfig) -> Any:
    """A complete run of these hyperparameters with this seed and repeats under the parent,
    or None (the Optuna engine's rule: training is deterministic on a CPU for a seed)."""
    runs = tracker.runs_frame(f"tags.`mlflow.parentRunId` = '{parent_id}' and "
                              f"tags.state = 'COMPLETE' and params.seed = '{config.seed}'")
    for _, run in runs.iterrows():
        same = all(str(run.get(f"params.{k}")) == str(v) for k, v in hparams.to_dict().items())
        repeats = run.get("metrics.repeats")
        repeats = 1 if repeats is None or (isinstance(repeats, float) and math.isnan(repeats)) \
            else int(repeats)
        if same and repeats == config.repeats:
            return run
    return None


def _make_tuner(config: StudyConfig, space: SearchSpace, dataset: Dataset, tracker: Tracker,
                parent_id: str, base_params: dict[str, Any], *, max_trials: int,
                deadline: float | None = None) -> keras_tuner.Tuner:
    import keras_tuner

    hp = hyperparameters(space, tuner=config.tuner)
    objective = keras_tuner.Objective(OBJECTIVE, direction="max")
    common = {"objective": objective, "hyperparameters": hp, "seed": config.seed,
              "tune_new_entries": False, "allow_new_entries": False}
    if config.tuner == "hyperband":
        from allsearch.study import _max_epochs

        oracle = keras_tuner.oracles.HyperbandOracle(max_epochs=_max_epochs(space),
                                                     factor=HYPERBAND_FACTOR, **common)
        oracle.max_trials = max_trials  # Hyperband has no such argument; create_trial honours it
    elif config.tuner == "bayesian":
        oracle = keras_tuner.oracles.BayesianOptimizationOracle(max_trials=max_trials, **common)
    elif config.tuner == "random":
        oracle = keras_tuner.oracles.RandomSearchOracle(max_trials=max_trials, **common)
    else:
        raise ConfigError(f"--tuner must be one of {list(TUNERS)}, got {config.tuner!r}")

    class TrackedTuner(keras_tuner.Tuner):
        """Trains through allsearch's trial code and logs each trial as an MLflow child run."""

        def run_trial(self, trial: keras_tuner.engine.trial.Trial, *args: Any, **kwargs: Any
                      ) -> dict[str, float]:
            values = {name: trial.hyperparameters.get(name) for name in hp.values}
            epochs = trial.hyperparameters.values.get("tuner/epochs")
            try:
                value = _run_one(config, space, dataset, tracker, parent_id, base_params,
                                 number=int(trial.trial_id) + 1, values=values,
                                 best=_best_so_far(tracker, parent_id),
                                 epochs=int(epochs) if epochs is not None else None)
            except StoreError as exc:
                # KerasTuner records any other exception as a failed trial and goes on; a
                # broken store would fail every trial the same way, so stop the search.
                raise keras_tuner.errors.FatalError(str(exc)) from exc
            return {OBJECTIVE: value}

        def on_trial_end(self, trial: keras_tuner.engine.trial.Trial) -> None:
            super().on_trial_end(trial)
            if deadline is not None and time.monotonic() > deadline:
                # --timeout: start no further trial (the oracle stops at max_trials).
                self.oracle.max_trials = len(self.oracle.trials)

    return TrackedTuner(oracle=oracle, directory=str(working_dir()),
                        project_name=config.study_name, overwrite=False)
