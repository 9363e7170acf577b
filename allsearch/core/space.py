"""Search spaces: typed, validated, loaded from YAML files (the shipped ones are package data,
allsearch/spaces/*.yaml). What one trial trains is an allsearch.core.hparams.HParams (re-exported
here: `from allsearch.core.space import HParams` keeps working).
"""

from __future__ import annotations

import importlib.resources
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from allsearch.core.contract import FACTORY_PATTERN
from allsearch.core.errors import SpaceError
from allsearch.core.hparams import (
    CLASS_WEIGHTS,
    FEATURE_MODES,
    LOSSES,
    LR_SCHEDULES,
    OWN_NETWORK_HINT,
    PAPER_BEST,
    POOLINGS,
    HParams,
)
from allsearch.core.space_file import read_space_text, safe_yaml

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = [
    "HParams", "ParamSpec", "SearchSpace", "load_space", "LOSSES", "FEATURE_MODES", "POOLINGS",
    "CLASS_WEIGHTS", "LR_SCHEDULES", "PAPER_BEST", "SPACE_DIR", "fixed_space_text",
    "read_space_text", "space_from_text", "safe_yaml", "parse_space",
]

# The shipped spaces travel inside the package (a wheel too), read through importlib.resources.
SPACE_DIR: Traversable = importlib.resources.files("allsearch") / "spaces"


@dataclass(frozen=True)
class ParamSpec:
    """How one hyperparameter is sampled."""

    name: str
    type: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    @property
    def bounds(self) -> tuple[float, float]:
        """(low, high) of an int or float range (reading a space file requires both)."""
        if self.low is None or self.high is None:
            raise SpaceError(f"param '{self.name}': a {self.type} range needs low and high")
        return self.low, self.high

    def values(self) -> list[Any]:
        """Every value this spec can take (for grid search and validation)."""
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "int":
            low, high = self.bounds
            return list(range(int(low), int(high) + 1, int(self.step or 1)))
        raise SpaceError(f"param '{self.name}': a float range has no finite grid; "
                         f"use type: categorical with explicit choices for grid search")

    def suggest(self, trial: Any) -> Any:
        """This parameter's value from an Optuna trial (its suggest_* methods; duck-typed, so
        this module does not import Optuna)."""
        if self.type == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        low, high = self.bounds
        if self.type == "int":
            return trial.suggest_int(self.name, int(low), int(high), step=int(self.step or 1),
                                     log=self.log)
        return trial.suggest_float(self.name, float(low), float(high), step=self.step,
                                   log=self.log)


@dataclass(frozen=True)
class SearchSpace:
    """A validated search-space file (allsearch/spaces/*.yaml, or a user's)."""

    name: str
    objective: str = "val_accuracy"
    # Several metrics make a multi-objective study (allsearch.core.objectives); None: `objective`.
    objectives: tuple[str, ...] | None = None
    params: tuple[ParamSpec, ...] = ()
    fixed: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] | None = None
    source: str = "<memory>"
    description: str = ""
    # A network of one's own (MODULE:FUNCTION), as the file names it; --model wins over it.
    model: str | None = None
    # Whether a network of one's own is named (here, or by --model): then a name that is no
    # HParams field is a knob of that network (HParams.knobs), else a SpaceError.
    own_network: bool = False

    def param(self, name: str) -> ParamSpec:
        return next(p for p in self.params if p.name == name)

    def hparams(self, sampled: dict[str, Any]) -> HParams:
        """Sampled values merged over the fixed ones, validated."""
        try:
            return HParams.from_dict({**self.fixed, **sampled}, where=self.source,
                                     knobs=self.own_network)
        except SpaceError as exc:
            if str(exc).startswith(self.source):
                raise
            raise SpaceError(f"{self.source}: {exc}") from None

    def sample(self, trial: Any) -> HParams:
        """The hyperparameters an Optuna trial proposes: each param suggested, merged over
        the fixed values (what every Optuna-driven run trains)."""
        return self.hparams({spec.name: spec.suggest(trial) for spec in self.params})

    def uses_hog_pca(self) -> bool:
        """Whether any trial of this space can need the HOG/PCA features."""
        modes = {self.fixed.get("features", "pixels")}
        if any(p.name == "features" for p in self.params):
            modes |= set(self.param("features").choices)
        if self.baseline:
            modes.add(self.baseline.get("features", "pixels"))
        return bool(modes - {"pixels"})

    def baseline_params(self) -> dict[str, Any] | None:
        """The baseline restricted to the sampled names (what a sampler can enqueue)."""
        if self.baseline is None:
            return None
        return {p.name: self.baseline[p.name] for p in self.params if p.name in self.baseline}

    def max_epochs(self) -> int:
        """The most epochs any trial of this space trains (a pruner's or tuner's budget)."""
        if any(p.name == "epochs" for p in self.params):
            return int(max(self.param("epochs").values()))
        return int(self.fixed.get("epochs", HParams().epochs))

    def grid(self) -> dict[str, list[Any]]:
        return {p.name: p.values() for p in self.params}


_TOP_KEYS = {"name", "objective", "objectives", "params", "fixed", "baseline", "description",
             "model"}
_SPEC_KEYS = {"int": {"type", "low", "high", "step", "log"},
              "float": {"type", "low", "high", "step", "log"},
              "categorical": {"type", "choices"}}
OBJECTIVES = ("val_accuracy",)


def load_space(path: str | Path, *, own_network: bool = False) -> SearchSpace:
    """Read and validate a search-space file; a bare name means a shipped space
    (allsearch/spaces/NAME.yaml). `own_network`: a network of one's own is named (--model),
    so names that are no HParams field are its knobs."""
    found = _resolve(path)
    return space_from_text(read_space_text(found), source=str(found), own_network=own_network)


def space_from_text(text: str, *, source: str = "<memory>", own_network: bool = False
                    ) -> SearchSpace:
    """A validated space from the text of a YAML space file (`source` names it in errors)."""
    return parse_space(safe_yaml(text, source=source), source=source, own_network=own_network)


def _resolve(path: str | Path) -> Path | Traversable:
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    shipped = SPACE_DIR / f"{candidate}.yaml"
    if candidate.suffix == "" and candidate.name == str(path) and shipped.is_file():
        return shipped
    known = (", ".join(sorted(p.name.removesuffix(".yaml") for p in SPACE_DIR.iterdir()
                              if p.name.endswith(".yaml"))) if SPACE_DIR.is_dir()
             else "none (this installation lacks allsearch/spaces: reinstall allsearch)")
    raise SpaceError(f"search space '{path}' not found; pass a path to a YAML file "
                     f"or one of the shipped names: {known}")


def parse_space(raw: Any, *, source: str = "<memory>", own_network: bool = False) -> SearchSpace:
    if not isinstance(raw, dict):
        raise SpaceError(f"{source}: expected a mapping with keys {sorted(_TOP_KEYS)}, "
                         f"got {type(raw).__name__}")
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise SpaceError(f"{source}: unknown key(s) {unknown}; allowed: {sorted(_TOP_KEYS)}")
    for key in ("name", "description"):
        if not isinstance(raw.get(key, ""), str):
            raise SpaceError(f"{source}: key '{key}' must be text, got a "
                             f"{type(raw[key]).__name__}; quote it")
    name = raw.get("name") or Path(source).stem
    objective = raw.get("objective", "val_accuracy")
    if objective not in OBJECTIVES:
        raise SpaceError(f"{source}: key 'objective' must be one of {list(OBJECTIVES)}, "
                         f"got {objective!r}")
    objectives = raw.get("objectives")
    if objectives is not None:
        from allsearch.core.errors import ConfigError
        from allsearch.core.objectives import check_objectives

        if not isinstance(objectives, list) or not all(isinstance(o, str) for o in objectives):
            raise SpaceError(f"{source}: 'objectives' must be a list of metric names")
        try:
            check_objectives(objectives, where=f"{source}: objectives")
        except ConfigError as exc:
            raise SpaceError(str(exc)) from None
        objectives = tuple(objectives)
    params_raw = raw.get("params") or {}
    fixed = raw.get("fixed") or {}
    if not isinstance(params_raw, dict) or not isinstance(fixed, dict):
        raise SpaceError(f"{source}: 'params' and 'fixed' must be mappings of name: value")
    model = raw.get("model")
    if model is not None and not (isinstance(model, str) and re.match(FACTORY_PATTERN, model)):
        raise SpaceError(f"{source}: key 'model' must be MODULE:FUNCTION (a network of your "
                         f"own, e.g. examples.resnet:build), got {model!r}")
    own_network = own_network or model is not None
    allowed = set(HParams.names())
    for key in [*params_raw, *fixed]:
        if key not in allowed and not own_network:
            raise SpaceError(f"{source}: unknown hyperparameter '{key}'; allowed: "
                             f"{sorted(allowed)}; {OWN_NETWORK_HINT}")
    both = sorted(set(params_raw) & set(fixed))
    if both:
        raise SpaceError(f"{source}: {both} both sampled and fixed; keep each in one place")
    specs = tuple(_parse_spec(n, s, source) for n, s in params_raw.items())
    baseline = raw.get("baseline")
    if baseline is not None and not isinstance(baseline, dict):
        raise SpaceError(f"{source}: 'baseline' must be a mapping of hyperparameter: value")
    space = SearchSpace(name=str(name), objective=objective, objectives=objectives,
                        params=specs, fixed=dict(fixed),
                        baseline=dict(baseline) if baseline else None, source=source,
                        model=model, own_network=own_network,
                        description=raw.get("description", ""))
    _check_values(space)
    return space


def _parse_spec(name: str, spec: Any, source: str) -> ParamSpec:
    where = f"{source}: params.{name}"
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str) \
            or spec["type"] not in _SPEC_KEYS:
        raise SpaceError(f"{where}: needs 'type' set to one of {sorted(_SPEC_KEYS)}")
    kind = spec["type"]
    unknown = sorted(set(spec) - _SPEC_KEYS[kind])
    if unknown:
        raise SpaceError(f"{where}: unknown key(s) {unknown} for type {kind}; "
                         f"allowed: {sorted(_SPEC_KEYS[kind])}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SpaceError(f"{where}: 'choices' must be a non-empty list")
        return ParamSpec(name, kind, choices=tuple(choices))
    number = int if kind == "int" else (int, float)
    for key in ("low", "high"):
        value = spec.get(key)
        if isinstance(value, bool) or not isinstance(value, number):
            raise SpaceError(f"{where}: '{key}' must be {'an int' if kind == 'int' else 'a number'}, "
                             f"got {value!r}")
    low, high = spec["low"], spec["high"]
    if low > high:
        raise SpaceError(f"{where}: low ({low}) > high ({high}); swap them")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise SpaceError(f"{where}: 'log' must be true or false, got {log!r}")
    if log and low <= 0:
        raise SpaceError(f"{where}: a log scale needs low > 0, got {low}")
    step = spec.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, number) or step <= 0):
        raise SpaceError(f"{where}: 'step' must be a positive number, got {step!r}")
    return ParamSpec(name, kind, low=low, high=high, step=step, log=log)


def _check_values(space: SearchSpace) -> None:
    """Every value a trial can be given makes a valid HParams: the fixed values, and each
    parameter's every choice (or both ends of its range) over them. HParams checks each field
    on its own, against an interval or a set, so a value that passes here passes in every
    combination: one check per value, never the product of the parameters."""
    space.hparams({})
    for spec in space.params:
        values = ([("choice", c) for c in spec.choices] if spec.type == "categorical"
                  else [("low", spec.low), ("high", spec.high)])
        for label, value in values:
            try:
                HParams.from_dict({**space.fixed, spec.name: _cast(spec, value)},
                                  knobs=space.own_network)
            except SpaceError as exc:
                raise SpaceError(f"{space.source}: params.{spec.name}: {label} {value!r} cannot "
                                 f"be used: {exc}") from None
    if space.baseline is not None:
        unknown = sorted(set(space.baseline) - set(HParams.names()))
        if unknown and not space.own_network:
            raise SpaceError(f"{space.source}: baseline has unknown hyperparameter(s) {unknown}")
        space.hparams(space.baseline)
        for spec in space.params:
            value = space.baseline.get(spec.name)
            if value is None:
                continue
            if spec.type == "categorical" and value not in spec.choices:
                raise SpaceError(f"{space.source}: baseline {spec.name}={value!r} is not among "
                                 f"the choices {list(spec.choices)}")
            if spec.type != "categorical" and not spec.low <= value <= spec.high:
                raise SpaceError(f"{space.source}: baseline {spec.name}={value!r} is outside "
                                 f"[{spec.low}, {spec.high}]")


def _cast(spec: ParamSpec, value: Any) -> Any:
    """The value as Optuna suggests it (a float range gives floats)."""
    if spec.type == "float" and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return value


def fixed_space_text(hparams: HParams, *, name: str, description: str,
                     comments: tuple[str, ...] = (), model: str | None = None) -> str:
    """A search-space file that samples nothing: every trial trains `hparams` (with
    --repeats K, over K seeds) on the network `model` names (None: the paper's). load_space
    reads it back to the same HParams."""
    lines = [f"# {c}".rstrip() for c in comments]
    body = {"name": name, "description": description, "objective": "val_accuracy",
            **({"model": model} if model else {}),
            "params": {}, "fixed": hparams.to_dict(), "baseline": {}}
    return "\n".join(lines) + ("\n" if lines else "") + yaml.safe_dump(body, sort_keys=False)
