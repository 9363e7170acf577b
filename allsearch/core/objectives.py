"""What a study optimizes: one or several metrics (each with its direction) and constraints.

`--objectives val_accuracy latency_ms_p50` searches accuracy and speed together: Optuna then
keeps the Pareto front, the trials no other trial beats on every objective. `--constraint
"latency_ms_p50<=3"` (repeatable) becomes a constraint value of every trial (Optuna's
`Trial.set_constraint`, pareto.set_constraints), so TPE and NSGA-II learn the feasible region.
Names come from the metric contract (docs/design.md); the directions are the metric's own,
never the user's to get wrong. Imports nothing heavy.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from allsearch.core.errors import ConfigError

__all__ = ["DIRECTIONS", "Constraint", "parse_constraint", "check_objectives", "directions",
           "FEASIBLE", "PARETO", "MULTI_OBJECTIVE_SAMPLERS"]

Direction = Literal["minimize", "maximize"]
# Metric -> direction. Test accuracy is not among them: a study must never choose on it.
DIRECTIONS: dict[str, Direction] = {
    "val_accuracy": "maximize",
    "latency_ms_p50": "minimize",
    "latency_ms_p95": "minimize",
    "val_prediction_time_s": "minimize",
    "test_prediction_time_s": "minimize",
    "train_time_s": "minimize",
    "n_params": "minimize",
    "model_size_mb": "minimize",
}
# Tags of a multi-objective study's trial runs: "true"/"false".
FEASIBLE, PARETO = "feasible", "pareto_front"
MULTI_OBJECTIVE_SAMPLERS = ("tpe", "nsga2", "random", "grid")
_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|<|>)\s*([-+]?\d+(?:\.\d*)?(?:e[-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Constraint:
    """`metric op bound`, e.g. latency_ms_p50 <= 3."""

    metric: str
    op: str
    bound: float

    def violation(self, value: float) -> float:
        """Optuna's convention: <= 0 is feasible, the amount above 0 how far from it."""
        return value - self.bound if self.op in ("<=", "<") else self.bound - value

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.bound:g}"


def parse_constraint(text: str) -> Constraint:
    match = _CONSTRAINT.match(text)
    if match is None:
        raise ConfigError(f"--constraint {text!r} is not METRIC<=VALUE (or >=, <, >), e.g. "
                          f"--constraint 'latency_ms_p50<=3'")
    metric, op, bound = match.groups()
    if metric not in DIRECTIONS and metric != "test_accuracy":
        raise ConfigError(f"--constraint {text!r}: unknown metric '{metric}'; one of "
                          f"{sorted(DIRECTIONS)}")
    return Constraint(metric, op, float(bound))


def check_objectives(names: tuple[str, ...] | list[str], *, where: str = "--objectives") -> None:
    unknown = [n for n in names if n not in DIRECTIONS]
    if unknown or not names:
        raise ConfigError(f"{where}: {unknown or 'nothing'} is no objective; choose from "
                          f"{sorted(DIRECTIONS)} (test_accuracy never: choosing on the test "
                          f"split would spoil it)")
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: {list(names)} names an objective twice")


def directions(names: Sequence[str]) -> list[Direction]:
    return [DIRECTIONS[n] for n in names]


def describe(names: Sequence[str], constraints: Any = ()) -> str:
    """The objectives with their directions (and constraints), for the summary."""
    text = ", ".join(f"{n} ({DIRECTIONS[n].removesuffix('imize')})" for n in names)
    if constraints:
        text += "; subject to " + ", ".join(str(c) for c in constraints)
    return text
