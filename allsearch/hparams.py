"""What defines one training run: `HParams`, every hyperparameter typed and validated
(defaults: the paper's best configuration), and the knobs of a network of your own.

Hyperparameter names are a contract shared by the model factory, both engines, the MLflow
params and the leaderboard (docs/design.md). allsearch.space samples them from search spaces.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from allsearch.errors import SpaceError

__all__ = ["HParams", "LOSSES", "FEATURE_MODES", "POOLINGS", "CLASS_WEIGHTS", "LR_SCHEDULES",
           "PAPER_BEST"]

Loss = Literal["categorical_crossentropy", "binary_crossentropy"]
FeatureMode = Literal["pixels", "hog_pca", "both"]
LOSSES: tuple[str, ...] = ("categorical_crossentropy", "binary_crossentropy")
FEATURE_MODES: tuple[str, ...] = ("pixels", "hog_pca", "both")
POOLINGS: tuple[str, ...] = ("flatten", "gap")
CLASS_WEIGHTS: tuple[str, ...] = ("none", "balanced")
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine", "plateau")


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

    def __post_init__(self) -> None:
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
        for name in ("batch_norm", "augment", "standardize"):
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
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, where: str = "hyperparameters") -> HParams:
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise SpaceError(f"{where}: unknown hyperparameter(s) {unknown}; "
                             f"allowed: {list(cls.names())}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_params(cls, values: Any, *, prefix: str = "params.",
                    where: str = "hyperparameters") -> HParams:
        """From a run's params (MLflow's text; a search_runs row's `params.<name>` columns):
        the hyperparameters it names, the defaults for those it predates."""
        found = {name: values.get(prefix + name) for name in cls.names()}
        return cls.from_text({k: v for k, v in found.items() if isinstance(v, str)}, where=where)

    @classmethod
    def from_text(cls, values: dict[str, str], *, where: str = "hyperparameters") -> HParams:
        """From text values as MLflow stores params ("64", "0.001", "True"), typed by field."""
        types = {f.name: type(f.default) for f in dataclasses.fields(cls)}
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


def _check_int(hp: HParams, name: str, low: int, high: int) -> None:
    value = getattr(hp, name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SpaceError(f"The '{name}' hyperparameter must be an int in [{low}, {high}]. "
                         f"Got {value!r} instead.")


# The paper's best configuration (Table 1, first row): every study enqueues it first.
PAPER_BEST = HParams()
