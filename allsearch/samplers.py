"""Optuna's samplers and pruners, made from a study's settings.

With several objectives only the samplers that handle them are accepted (one line names the
others), and no pruner runs (Optuna cannot prune multi-objective trials; said once). With
constraints the samplers that learn from them get Optuna's constraints_func.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import optuna

from allsearch import pareto
from allsearch.config import PRUNERS, SAMPLERS
from allsearch.errors import ConfigError, SpaceError
from allsearch.objectives import MULTI_OBJECTIVE_SAMPLERS
from allsearch.space import SearchSpace

__all__ = ["make_sampler", "make_pruner", "PrunerWarning"]


class PrunerWarning(UserWarning):
    """A pruner that cannot act in this study."""


def make_sampler(name: str, space: SearchSpace, seed: int, *,
                 objectives: Sequence[str] = ("val_accuracy",),
                 constraints: Sequence[str] = ()) -> optuna.samplers.BaseSampler:
    """The sampler; with several objectives only those that handle them, and with constraints
    Optuna's constraints_func (the sampler learns where trials are feasible)."""
    multi = len(objectives) > 1
    if multi and name not in MULTI_OBJECTIVE_SAMPLERS:
        raise ConfigError(f"--sampler {name} optimizes one objective; with --objectives "
                          f"{' '.join(objectives)} use one of {list(MULTI_OBJECTIVE_SAMPLERS)}")
    feasibility = pareto.constraints_func(constraints) if constraints else None
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constraints_func=feasibility)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, constraints_func=feasibility)
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


def make_pruner(name: str, space: SearchSpace, *, objectives: Sequence[str] = ("val_accuracy",),
                say: bool = True) -> optuna.pruners.BasePruner:
    """The pruner; `say`: warn that several objectives cannot be pruned (once per study: the
    main process says it, its workers do not)."""
    if len(objectives) > 1:
        if name != "none" and say:
            warnings.warn(f"Optuna cannot prune trials of several objectives: --pruner {name} "
                          f"is ignored, every trial trains to its end", PrunerWarning,
                          stacklevel=2)
        return optuna.pruners.NopPruner()
    if name == "median":
        # Five complete trials before judging, and never before epoch 3: early epochs are noisy.
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=space.max_epochs(),
                                              reduction_factor=3)
    if name == "successive_halving":
        # Asynchronous successive halving (ASHA): rungs at epochs 1, 3, 9, ...; a trial goes on
        # past a rung only in the best third of the trials that reached it.
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"--pruner must be one of {list(PRUNERS)}, got {name!r}")
