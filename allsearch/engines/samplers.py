"""Optuna's samplers and pruners, made from a study's settings.

With several objectives only the samplers that handle them are accepted (one line names the
others), and no pruner runs (Optuna cannot prune multi-objective trials; said once). With
constraints the objective records each trial's constraint values with Optuna's
`Trial.set_constraint` (pareto.set_constraints): TPE and NSGA-II learn from them, random and
grid search ignore them (the constraints still decide the front and the champion), CMA-ES and
GP are refused. `study_sampler` is the one factory: the study, its workers and the per-trial
reseeding all make their sampler through it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import optuna

from allsearch.core.config import PRUNERS, SAMPLERS, StudyConfig
from allsearch.core.errors import ConfigError, SpaceError
from allsearch.core.objectives import MULTI_OBJECTIVE_SAMPLERS
from allsearch.core.space import SearchSpace

__all__ = ["study_sampler", "make_sampler", "Reseed", "make_pruner", "PrunerWarning"]


class PrunerWarning(UserWarning):
    """A pruner that cannot act in this study."""


def study_sampler(config: StudyConfig, space: SearchSpace, seed: int
                  ) -> optuna.samplers.BaseSampler:
    """The study's sampler (config.sampler, for its objectives and constraints) with `seed`."""
    return make_sampler(config.sampler, space, seed,
                        objectives=config.objectives or ("val_accuracy",),
                        constraints=config.constraints)


def make_sampler(name: str, space: SearchSpace, seed: int, *,
                 objectives: Sequence[str] = ("val_accuracy",),
                 constraints: Sequence[str] = ()) -> optuna.samplers.BaseSampler:
    """The sampler; with several objectives only those that handle them, and with constraints
    not CMA-ES or GP (TPE and NSGA-II learn from each trial's constraint values)."""
    if len(objectives) > 1 and name not in MULTI_OBJECTIVE_SAMPLERS:
        raise ConfigError(f"--sampler {name} optimizes one objective; with --objectives "
                          f"{' '.join(objectives)} use one of {list(MULTI_OBJECTIVE_SAMPLERS)}")
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        try:
            return optuna.samplers.GridSampler(space.grid(), seed=seed)
        except SpaceError as exc:
            raise ConfigError(f"--sampler grid: {exc}") from None
    if constraints:
        raise ConfigError(f"--sampler {name} takes no --constraint; use tpe or nsga2")
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


class Reseed:
    """An Optuna callback: each trial samples with a seed of its own (the study's seed and the
    trial's number), so the same --seed proposes the same configurations however the trials
    fall on processes; the sampler is the study's (`study_sampler`), only its seed changes."""

    def __init__(self, config: StudyConfig, space: SearchSpace) -> None:
        self.config, self.space = config, space

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial | None) -> None:
        if self.config.sampler == "grid":
            return  # one seed for all: it orders the grid, and every process must agree
        number = len(study.get_trials(deepcopy=False))  # the next trial's number
        study.sampler = study_sampler(self.config, self.space,
                                      self.config.seed + 1000 * (number + 1))


def make_pruner(name: str, space: SearchSpace, *, objectives: Sequence[str] = ("val_accuracy",),
                say: bool = True, cv: int = 0) -> optuna.pruners.BasePruner:
    """The pruner; `say`: warn that several objectives cannot be pruned (once per study: the
    main process says it, its workers do not). With --cv K a trial's steps are its K folds
    (allsearch.training.folds), not epochs: the median judges from the first fold."""
    if len(objectives) > 1:
        if name != "none" and say:
            warnings.warn(f"Optuna cannot prune trials of several objectives: --pruner {name} "
                          f"is ignored, every trial trains to its end", PrunerWarning,
                          stacklevel=2)
        return optuna.pruners.NopPruner()
    if name == "median":
        # Five complete trials before judging, and never before epoch 3: early epochs are noisy
        # (a fold under --cv is a whole training: judged from the first).
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0 if cv else 2)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=cv or space.max_epochs(),
                                              reduction_factor=3)
    if name == "successive_halving":
        # Asynchronous successive halving (ASHA): rungs at epochs 1, 3, 9, ...; a trial goes on
        # past a rung only in the best third of the trials that reached it.
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"--pruner must be one of {list(PRUNERS)}, got {name!r}")
