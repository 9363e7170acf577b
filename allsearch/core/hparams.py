"""What defines one training run: `HParams`, every hyperparameter typed and validated
(defaults: the paper's best configuration), and the knobs of a network of your own (--model):
any names a space gives it, passed to that network's factory and logged as params.

Hyperparameter names are a contract shared by the model factory, both engines, the MLflow
params and the leaderboard (docs/design.md). allsearch.core.space samples them from search spaces.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from allsearch.core.contract import MODEL_KNOBS, RUN_PARAMS
from allsearch.core.errors import SpaceError

__all__ = ["HParams", "LOSSES", "FEATURE_MODES", "POOLINGS", "CLASS_WEIGHTS", "LR_SCHEDULES",
           "PAPER_BEST", "OWN_NETWORK_HINT", "knobs_from_text"]

Loss = Literal["categorical_crossentropy", "binary_crossentropy"]
FeatureMode = Literal["pixels", "hog_pca", "both"]
LOSSES: tuple[str, ...] = ("categorical_crossentropy", "binary_crossentropy")
FEATURE_MODES: tuple[str, ...] = ("pixels", "hog_pca", "both")
POOLINGS: tuple[str, ...] = ("flatten", "gap")
CLASS_WEIGHTS: tuple[str, ...] = ("none", "balanced")
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine", "plateau")
# A knob's name: a Python identifier (it is a keyword of the factory's dict and an MLflow param).
KNOB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_KNOB_TEXT = 250
OWN_NETWORK_HINT = ("a knob of a network of your own needs that network: --model "
                    "MODULE:FUNCTION, or `model: MODULE:FUNCTION` in the space")


@dataclass(frozen=True)
class HParams:
    """Everything that defines one training run; defaults are the paper's best configuration."""

    epochs: int = 15
    batch_size: int = 64
    loss: Loss = "categorical_crossentropy"
    conv_layers: int = 3
    learning_rate: float = 0.001
    dropout: float = 0.5
    dense_units: int = 128
    features: FeatureMode = "pixels"
    # The wide space's knobs (allsearch/spaces/wide.yaml); each default is the paper's network.
    filter_multiplier: float = 1.0  # every conv block's filters times this
    batch_norm: bool = False  # batch normalization after every convolution
    # With batch_norm: normalize each block after its 2x2 pooling instead, on a quarter of the
    # values (conv, pool, norm, ReLU): another network, whose epochs run 2.5x faster on a CPU
    # (benchmarks/throughput.py). Without batch_norm it changes nothing.
    bn_after_pool: bool = False
    pooling: Literal["flatten", "gap"] = "flatten"  # how the conv branch ends
    augment: bool = False  # random flips, rotations, brightness/contrast, training only
    # Each image to zero mean and unit variance before the first convolution.
    standardize: bool = False
    class_weights: Literal["none", "balanced"] = "none"  # loss weights per class
    # 0: train every epoch and keep the last weights (the paper). k > 0: stop once validation
    # accuracy has not improved for k epochs and keep the best epoch's weights.
    patience: int = 0
    # How the learning rate moves over the epochs: constant (the paper), cosine decay to 0 over
    # `epochs`, or halved whenever validation loss has not improved for 2 epochs (plateau).
    lr_schedule: Literal["constant", "cosine", "plateau"] = "constant"
    # Decoupled weight decay (AdamW) when > 0; 0 is plain Adam (the paper).
    weight_decay: float = 0.0
    # Targets of 1 - s for the true class and s / (k - 1) elsewhere; 0 is hard targets.
    label_smoothing: float = 0.0
    # Knobs of a network of your own (--model): (name, value) pairs in name order. Its factory
    # gets them in `params` beside the fields above; a run logs each as a param, and all of
    # them as one JSON param (MODEL_KNOBS) that gives them back typed.
    knobs: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "knobs", _checked_knobs(self.knobs))
        _check_int(self, "epochs", 1, 10_000)
        _check_int(self, "batch_size", 1, 65_536)
        _check_int(self, "conv_layers", 0, 64)
        _check_int(self, "dense_units", 1, 65_536)
        _check_int(self, "patience", 0, 10_000)
        if not isinstance(self.learning_rate, (int, float)) or not 0 < self.learning_rate < 10:
            raise SpaceError(f"The 'learning_rate' hyperparameter must be a float in (0, 10). "
                             f"Got {self.learning_rate!r} instead.")
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise SpaceError(f"The 'dropout' hyperparameter must be a float in [0, 1). "
                             f"Got {self.dropout!r} instead.")
        if self.loss not in LOSSES:
            raise SpaceError(f"The 'loss' hyperparameter must be one of {list(LOSSES)}. "
                             f"Got {self.loss!r} instead.")
        if (isinstance(self.filter_multiplier, bool)
                or not isinstance(self.filter_multiplier, (int, float))
                or not 0.1 <= self.filter_multiplier <= 8):
            raise SpaceError(f"The 'filter_multiplier' hyperparameter must be a float in "
                             f"[0.1, 8]. Got {self.filter_multiplier!r} instead.")
        for name in ("batch_norm", "bn_after_pool", "augment", "standardize"):
            if not isinstance(getattr(self, name), bool):
                raise SpaceError(f"The '{name}' hyperparameter must be true or false. "
                                 f"Got {getattr(self, name)!r} instead.")
        if self.pooling not in POOLINGS:
            raise SpaceError(f"The 'pooling' hyperparameter must be one of {list(POOLINGS)}. "
                             f"Got {self.pooling!r} instead.")
        if self.class_weights not in CLASS_WEIGHTS:
            raise SpaceError(f"The 'class_weights' hyperparameter must be one of "
                             f"{list(CLASS_WEIGHTS)}. Got {self.class_weights!r} instead.")
        if self.lr_schedule not in LR_SCHEDULES:
            raise SpaceError(f"The 'lr_schedule' hyperparameter must be one of "
                             f"{list(LR_SCHEDULES)}. Got {self.lr_schedule!r} instead.")
        for name, high in (("weight_decay", 1.0), ("label_smoothing", 0.5)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < high:
                raise SpaceError(f"The '{name}' hyperparameter must be a float in [0, {high}). "
                                 f"Got {value!r} instead.")
        if self.features not in FEATURE_MODES:
            raise SpaceError(f"The 'features' hyperparameter must be one of {list(FEATURE_MODES)}. "
                             f"Got {self.features!r} instead.")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The hyperparameters every network takes (the knobs of one's own are not among them)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "knobs")

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, where: str = "hyperparameters",
                  knobs: bool = False) -> HParams:
        """From names and values; a name that is no field is a knob where `knobs` (a network
        of one's own is named), else a SpaceError."""
        unknown = sorted(set(values) - set(cls.names()))
        if unknown and not knobs:
            raise SpaceError(f"{where}: unknown hyperparameter(s) {unknown}; allowed: "
                             f"{list(cls.names())}; {OWN_NETWORK_HINT}")
        return cls(**{k: v for k, v in values.items() if k not in unknown},
                   knobs=tuple((k, values[k]) for k in unknown))

    def to_dict(self) -> dict[str, Any]:
        """Every hyperparameter and knob by name: what a factory gets as `params`."""
        return {**{name: getattr(self, name) for name in self.names()}, **dict(self.knobs)}

    def params(self) -> dict[str, Any]:
        """What a run logs: to_dict(), and the knobs as one JSON param where there are any."""
        knobs = {MODEL_KNOBS: json.dumps(dict(self.knobs), sort_keys=True)} if self.knobs else {}
        return {**self.to_dict(), **knobs}

    @classmethod
    def from_params(cls, values: Any, *, prefix: str = "params.",
                    where: str = "hyperparameters") -> HParams:
        """From a run's params (MLflow's text; a search_runs row's `params.<name>` columns):
        the hyperparameters it names, the defaults for those it predates, its knobs."""
        found = {name: values.get(prefix + name) for name in cls.names()}
        hparams = cls.from_text({k: v for k, v in found.items() if isinstance(v, str)}, where=where)
        text = values.get(prefix + MODEL_KNOBS)
        if not isinstance(text, str) or not text:
            return hparams
        return dataclasses.replace(hparams, knobs=tuple(knobs_from_text(text, where).items()))

    @classmethod
    def from_text(cls, values: dict[str, str], *, where: str = "hyperparameters") -> HParams:
        """From text values as MLflow stores params ("64", "0.001", "True"), typed by field."""
        types: dict[str, type[Any]] = {f.name: type(f.default) for f in dataclasses.fields(cls)}
        parsed: dict[str, Any] = {}
        for name, text in values.items():
            kind = types.get(name, str)
            try:
                if kind is bool:
                    if text not in ("True", "False", "true", "false"):
                        raise ValueError(text)
                    parsed[name] = text in ("True", "true")
                else:
                    parsed[name] = kind(text)
            except ValueError:
                raise SpaceError(f"{where}: {name}={text!r} cannot be read as {kind.__name__}") from None
        return cls.from_dict(parsed, where=where)


def knobs_from_text(text: str, where: str = "run") -> dict[str, Any]:
    """A run's knobs from its MODEL_KNOBS param (a JSON object), typed as the space gave them."""
    try:
        knobs = json.loads(text)
    except ValueError:
        knobs = None
    if not isinstance(knobs, dict):
        raise SpaceError(f"{where}: {MODEL_KNOBS}={text[:80]!r} is not a JSON object of knobs")
    return knobs


def _checked_knobs(knobs: Any) -> tuple[tuple[str, Any], ...]:
    """Knobs in name order, each a short name with a value MLflow keeps as a param and JSON
    gives back (a number, true/false, a short text)."""
    pairs = tuple(sorted(dict(knobs).items()))
    for name, value in pairs:
        if not isinstance(name, str) or not KNOB_NAME.match(name):
            raise SpaceError(f"knob {name!r}: a knob's name must be a Python identifier of at "
                             f"most 64 characters")
        if name in RUN_PARAMS or name in HParams.names():
            raise SpaceError(f"knob '{name}' has the name of a param every run logs "
                             f"({sorted(RUN_PARAMS)}); give it another name")
        if not isinstance(value, (bool, int, float, str)) or (
                isinstance(value, float) and not math.isfinite(value)) or (
                isinstance(value, str) and len(value) > MAX_KNOB_TEXT):
            raise SpaceError(f"knob {name}={value!r:.60}: a knob's value must be a finite "
                             f"number, true/false or a text of at most {MAX_KNOB_TEXT} "
                             f"characters")
    return pairs


def _check_int(hp: HParams, name: str, low: int, high: int) -> None:
    value = getattr(hp, name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SpaceError(f"The '{name}' hyperparameter must be an int in [{low}, {high}]. "
                         f"Got {value!r} instead.")


# The paper's best configuration (Table 1, first row): every study enqueues it first.
PAPER_BEST = HParams()
