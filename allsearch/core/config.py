"""Every setting of a study, defined once.

Each field of StudyConfig carries its help text (and its choices): the command-line flags of
`python -m allsearch.study`, the keywords of `allsearch.study.run()` and the params logged on
the parent run are all generated from these fields, so a new setting is one edit here
(docs/design.md, "Settings"). Imports nothing heavy (NumPy, through allsearch.core.splits).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from allsearch.core.contract import (
    BUILT_IN_MODEL,
    COLORS,
    FACTORY_PATTERN,
    MODEL_FACTORY,
    PIXEL_PLACES,
)
from allsearch.core.errors import ConfigError
from allsearch.core.hardware import PRECISIONS
from allsearch.core.splits import KINDS, SplitKind

__all__ = ["StudyConfig", "parse_trainer", "STANDIN_PREFIX", "SAMPLERS", "PRUNERS", "LOG_MODELS", "ENGINES", "TUNERS",
           "DEFAULT_STORAGE", "SERVER_WAIT_S", "add_arguments", "from_arguments", "settings",
           "absolute_sqlite", "factory_name", "IMAGE_SIZES"]

DEFAULT_STORAGE = "sqlite:///mlruns/optuna.db"
SAMPLERS: tuple[str, ...] = ("tpe", "nsga2", "random", "grid", "cmaes", "gp")
PRUNERS: tuple[str, ...] = ("median", "hyperband", "successive_halving", "none")
LOG_MODELS: tuple[str, ...] = ("best", "all", "none")
ENGINES: tuple[str, ...] = ("optuna", "keras-tuner")
TUNERS: tuple[str, ...] = ("hyperband", "bayesian", "random")  # KerasTuner's, for keras-tuner
SERVER_WAIT_S = 600.0  # the default of --server-wait (a Tracker made outside a study has it too)
NOT_IN_NAMES = "'\"`\\"  # characters a study name may not hold
# --image-size: HOG's 2x2 blocks of 8x8 cells need 16 pixels; beyond 4096 a study of small
# networks is not what is meant.
IMAGE_SIZES = (16, 4096)
_FACTORY_TEXT = re.compile(FACTORY_PATTERN)  # --model MODULE:FUNCTION


def setting(default: Any, help: str, *, choices: tuple[str, ...] | None = None,
            cli: bool = True, many: str | None = None, flag: str | None = None,
            param: str | None = None) -> Any:
    """A StudyConfig field with what the CLI needs to know about it. `many`: a list of
    values, given at once ("nargs") or by repeating the flag ("append"); `flag`: the flag's
    name where it is not the field's; `param`: the parent run's param where it is not."""
    return field(default=default, metadata={"help": help, "choices": choices, "cli": cli,
                                            "many": many, "flag": flag, "param": param})


@dataclass(frozen=True)
class StudyConfig:
    """Every setting of a study; the CLI flags and run()'s keywords are made from these fields."""

    trials: int = setting(50, "finished trials the study should hold; a resumed study runs only "
                              "the missing ones")
    timeout: float | None = setting(None, "stop starting new trials after this many seconds")
    space: str = setting("paper", "search-space YAML file, or the name of a shipped space (allsearch/spaces/)")
    data: str | None = setting(None, "folder of class folders, or a dataset bundle (.npz, "
                                     "python -m allsearch.data PATH --bundle FILE); default: "
                                     "data/leukemia/Original, downloaded from Kaggle when missing")
    study_name: str | None = setting(None, "study name, also the MLflow experiment (default: "
                                           "the space's name)")
    storage: str | None = setting(None, f"Optuna storage URL (default: $ALLSEARCH_STORAGE or "
                                        f"{DEFAULT_STORAGE}; postgresql://... for many machines)")
    tracking_uri: str | None = setting(None, "MLflow tracking URI (default: $MLFLOW_TRACKING_URI "
                                             "or sqlite:///mlruns/mlflow.db)")
    server_wait: float = setting(
        SERVER_WAIT_S, "seconds to wait for an MLflow tracking server (http://...) that stopped "
                       "answering before the study stops (it says so while it waits; a server "
                       "back in time continues the study, losing no trial)")
    record: str | None = setting(None, "record the study in this folder instead of MLflow (no "
                                       "MLflow needed, e.g. on a GPU machine); replay it with "
                                       "python -m allsearch.study import DIR")
    engine: Literal["optuna", "keras-tuner"] = setting(
        "optuna", "optuna, or keras-tuner: the same space, trial code and MLflow layout through "
                  "KerasTuner", choices=ENGINES)
    tuner: Literal["hyperband", "bayesian", "random"] = setting(
        "hyperband", "KerasTuner's search with --engine keras-tuner", choices=TUNERS)
    objectives: tuple[str, ...] | None = setting(
        None, "metrics to optimize: val_accuracy (maximized); latency_ms_p50, latency_ms_p95, "
              "n_params, model_size_mb, val_prediction_time_s, train_time_s (minimized); two "
              "or more search the trade-off (a Pareto front); default: the space's "
              "`objectives`, else val_accuracy", many="nargs")
    constraints: tuple[str, ...] = setting(
        (), "a bound every trial must meet, e.g. 'latency_ms_p50<=3' (repeatable): the sampler "
            "learns the feasible region; infeasible trials are kept, tagged feasible=false",
        many="append", flag="constraint")
    sampler: Literal["tpe", "nsga2", "random", "grid", "cmaes", "gp"] = setting(
        "tpe", "Optuna sampler (nsga2 for several objectives; gp needs PyTorch)", choices=SAMPLERS)
    pruner: Literal["median", "hyperband", "successive_halving", "none"] = setting(
        "median", "stop unpromising trials per epoch", choices=PRUNERS)
    seed: int = setting(0, "seed of the sampler and of training")
    repeats: int = setting(1, "train each configuration K times with seeds seed..seed+K-1; the "
                              "objective is the mean validation accuracy")
    workers: int = setting(1, "processes on this machine sharing the study")
    trials_per_process: int = setting(
        0, "at most this many trials per process, then a fresh one takes over (0: no count; "
           "a process runs trials until its memory grows past --worker-memory-mb)")
    worker_memory_mb: int = setting(
        256, "a process takes trials while its resident memory stays within this many MB of "
             "its first trial's (TensorFlow keeps some after every fit; a next trial that would "
             "pass it, judged by the last one's growth, goes to a fresh process) (0: no limit)")
    retrain_duplicates: bool = setting(
        False, "train a configuration again when the sampler proposes one that already "
               "completed with the same seed (by default its result is reused: training is "
               "deterministic on a CPU; use this where it is not, e.g. on a GPU)")
    log_models: Literal["best", "all", "none"] = setting(
        "best", "log the model of each new best trial (best), every complete trial (all), or "
                "none", choices=LOG_MODELS)
    precision: Literal["auto", "float32", "bfloat16"] = setting(
        "auto", "training precision; auto: bfloat16 (mixed, output layer in float32) where the "
                "CPU computes bf16 natively, else float32", choices=PRECISIONS)
    split_seed: int = setting(42, "seed of the 70/15/15 split")
    # How the data is split (allsearch.core.splits; docs/guide.md, "Splits").
    split: SplitKind = setting(
        "random", "random: stratified by image; groups: no group (patient) in two parts "
                  "(--group-pattern or --groups); blocks: whole blocks of --block-size files "
                  "in name order per class", choices=KINDS)
    group_pattern: str | None = setting(None, "with --split groups: a file's group is the first "
                                              "capture group of this regex on its name, e.g. "
                                              "'^(P\\d+)_'")
    groups: str | None = setting(None, "with --split groups: a CSV file with columns file,group")
    block_size: int = setting(0, "with --split blocks: files per block")
    embargo: int = setting(0, "with --split blocks: files left out on each side of a boundary "
                              "between two parts")
    cv: int = setting(0, "K >= 2: the objective is the mean validation accuracy over K folds of "
                         "the non-test part (folds keep groups and blocks whole; the test part "
                         "is in none); 0: one validation part (allsearch.training.folds)")
    model: str | Callable[..., Any] | None = setting(
        None, "a network of your own: MODULE:FUNCTION, called for every trial as FUNCTION(params, "
              "input_shape, n_classes) and returning a keras.Model (MODULE is imported from the "
              "current folder or PYTHONPATH; docs/guide.md, 'A network of your own'); from "
              "Python also the function itself; default: the space's `model`, else the paper's "
              "CNN family", param=MODEL_FACTORY)
    image_size: int = setting(100, "every image is resized to this many pixels square, in "
                                   "training and prediction alike")
    color: Literal["gray", "rgb"] = setting(
        "gray", "gray: one channel (the paper's images); rgb: three", choices=COLORS)
    pixels: Literal["auto", "memory", "disk"] = setting(
        "auto", "where the decoded images stay while trials train: memory; disk: streamed from "
                "the pixel cache file (datasets larger than memory; its pages are shared by "
                "every worker); auto: disk where they would take more than a quarter of the "
                "machine's memory", choices=PIXEL_PLACES)
    trainer: str = setting("keras", "what trains each trial: keras, or standin:SECONDS, a "
                                    "stand-in that sleeps and returns a synthetic result (load "
                                    "tests of the study loop: it measures coordination, not "
                                    "training)")
    progress: bool = setting(True, "show the progress bar")

    def validate(self) -> None:
        for name in ("trials", "repeats", "workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"--{_flag(name)} must be a positive integer, got {value!r}")
        _check_cv(self)
        for name in ("trials_per_process", "worker_memory_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"--{_flag(name)} must be 0 (no limit) or a positive "
                                  f"integer, got {value!r}")
        if isinstance(self.server_wait, bool) or not isinstance(self.server_wait, (int, float)) \
                or not self.server_wait >= 0:
            raise ConfigError(f"--server-wait must be a number of seconds >= 0, got "
                              f"{self.server_wait!r}")
        if self.study_name is not None and set(self.study_name) & set(NOT_IN_NAMES):
            # MLflow's filter strings quote a name (tags.`allsearch.study` = '...'), and a
            # record's lines refuse such a name (allsearch.tracking.record_format).
            raise ConfigError(f"--study-name {self.study_name!r} holds a quote, backtick or "
                              f"backslash; name the study without them")
        low, high = IMAGE_SIZES
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) \
                or not low <= self.image_size <= high:
            raise ConfigError(f"--image-size must be an integer number of pixels in [{low}, "
                              f"{high}], got {self.image_size!r}")
        if self.model is not None and not callable(self.model) and not (
                isinstance(self.model, str) and _FACTORY_TEXT.match(self.model)):
            raise ConfigError(f"--model must be MODULE:FUNCTION (e.g. examples.resnet:build), "
                              f"got {self.model!r}")
        if self.timeout is not None and not self.timeout > 0:
            raise ConfigError(f"--timeout must be a positive number of seconds, got {self.timeout!r}")
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ConfigError(f"--{_flag(f.name)} must be one of {list(choices)}, "
                                  f"got {getattr(self, f.name)!r}")
        from allsearch.core.objectives import check_objectives, parse_constraint
        parse_trainer(self.trainer)
        from allsearch.core.splits import check_settings

        check_settings(self.split, self.group_pattern, self.groups, self.block_size, self.embargo)
        if self.objectives is not None:
            check_objectives(self.objectives)
        for text in self.constraints:
            parse_constraint(text)
        if self.record is not None and self.tracking_uri is not None:
            raise ConfigError("--record and --tracking-uri exclude each other: --record writes "
                              "the runs to a folder, import them into MLflow later")

    def replace(self, **changes: Any) -> StudyConfig:
        """A copy with some settings changed; an unknown name is a ConfigError."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ConfigError(f"unknown setting(s) {unknown}; the settings are "
                              f"{[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **changes)


def _check_cv(config: StudyConfig) -> None:
    """--cv is 0 (off) or K >= 2 folds, one seed's, through the Optuna engine."""
    cv = config.cv
    if isinstance(cv, bool) or not isinstance(cv, int) or cv < 0 or cv == 1:
        raise ConfigError(f"--cv must be 0 (one validation part) or a number of folds >= 2, "
                          f"got {cv!r}")
    if cv and config.repeats > 1:
        raise ConfigError(f"--cv {cv} and --repeats {config.repeats} exclude each other: the "
                          f"folds already train the configuration {cv} times; use one of them")
    if cv and config.engine != "optuna":
        raise ConfigError(f"--cv works with --engine optuna only (KerasTuner scores one "
                          f"validation part per trial); drop --cv {cv} or use --engine optuna")


def _flag(name: str) -> str:
    return name.replace("_", "-")


def add_arguments(parser: Any, *, only: Sequence[str] | None = None,
                  defaults: bool = True) -> None:
    """One command-line flag per StudyConfig field on `parser` (an ArgumentParser or one of its
    argument groups), with its default and help; `only`: the
    flags of these fields; `defaults=False`: every flag's default is None (not given), for a
    command that falls back on something else (confirm: the study's split)."""
    for f in dataclasses.fields(StudyConfig):
        if not f.metadata.get("cli", True) or (only is not None and f.name not in only):
            continue
        help_text, choices = f.metadata["help"], f.metadata.get("choices")
        flag = f"--{_flag(f.metadata.get('flag') or f.name)}"
        many = f.metadata.get("many")
        if many is not None:
            parser.add_argument(flag, dest=f.name, default=None, metavar="NAME" if
                                many == "nargs" else "BOUND",
                                nargs="+" if many == "nargs" else None,
                                action="append" if many == "append" else "store", help=help_text)
        elif f.default is True:
            parser.add_argument(f"--no-{_flag(f.name)}", dest=f.name, action="store_false",
                                help=f"do not {help_text[0].lower()}{help_text[1:]}")
        elif f.default is False:
            parser.add_argument(f"--{_flag(f.name)}", dest=f.name, action="store_true",
                                help=help_text)
        else:
            kind = {int: int, float: float}.get(type(f.default), str)
            if f.name == "timeout":
                kind = float
            value = f.default if defaults else None
            default = "" if value is None else f" (default: {value})"
            parser.add_argument(f"--{_flag(f.name)}", dest=f.name, type=kind, default=value,
                                choices=choices, help=help_text + default)


def from_arguments(args: argparse.Namespace) -> StudyConfig:
    """The StudyConfig that parsed flags describe."""
    values = {}
    for f in dataclasses.fields(StudyConfig):
        if hasattr(args, f.name):
            value = getattr(args, f.name)
            if f.metadata.get("many"):  # a list flag not given is the field's default
                value = f.default if value is None else tuple(value)
            values[f.name] = value
    return StudyConfig(**values)


def settings(config: StudyConfig) -> dict[str, Any]:
    """The settings as a parent run logs them (store URLs without passwords)."""
    from allsearch.core.errors import redact

    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    for name in ("storage", "tracking_uri"):
        if values[name]:
            values[name] = redact(values[name])
    values["model"] = factory_name(config.model)
    for f in dataclasses.fields(config):
        if f.metadata.get("param"):
            values[f.metadata["param"]] = values.pop(f.name)
    return values


def factory_name(model: str | Callable[..., Any] | None) -> str:
    """How runs name a network's factory: MODULE:FUNCTION (a function by its module and
    qualified name), BUILT_IN_MODEL for the paper's CNN family (None)."""
    if model is None:
        return BUILT_IN_MODEL
    if isinstance(model, str):
        return model
    return f"{getattr(model, '__module__', '?')}:{getattr(model, '__qualname__', repr(model))}"


def absolute_sqlite(uri: str) -> str:
    """A relative sqlite URI made absolute (its folder created): SQLAlchemy and MLflow cache
    engines by URI, so a relative one could reach another folder's database after a chdir."""
    if not uri.startswith("sqlite:///") or uri.startswith("sqlite:///file:"):
        return uri  # a SQLite URI filename (file:...?mode=ro&uri=true) is the user's own
    path = Path(uri.removeprefix("sqlite:///")).resolve()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # opening the store reports it, with the URL
    return f"sqlite:///{path}"


STANDIN_PREFIX = "standin:"


def parse_trainer(trainer: str) -> float | None:
    """The seconds of a `standin:SECONDS` trainer; None for `keras`."""
    if trainer == "keras":
        return None
    try:
        seconds = (float(trainer.removeprefix(STANDIN_PREFIX))
                   if trainer.startswith(STANDIN_PREFIX) else -1.0)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise ConfigError(f"--trainer must be keras or standin:SECONDS (SECONDS >= 0), got "
                          f"{trainer!r}")
    return seconds
