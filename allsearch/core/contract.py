"""The names that are contracts: tags, metrics and states every engine writes and every
reader (leaderboard, UI, import, predict) reads. docs/design.md lists them; change both together.

Imports nothing: the trial code, the MLflow tracker, the local recorder and the leaderboard
all take their names from here, and `Store`, the one interface through which a study writes
its runs (allsearch.tracking.tracking.Tracker and allsearch.tracking.recorder.Recorder both have it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["NETWORK_FILE", "PIPELINE_FILE", "ROLE", "STUDY", "STATE", "CONFIRMS", "MODEL_URI", "COLLAPSED", "OBJECTIVES_ATTR", "CONFIG_KEY", "RECORDED_ID", "PARENT_ATTR",
           "EPOCH_METRICS", "RECALL_PREFIX", "State", "RUN_STATUS", "PAPER_TABLE1_BEST",
           "CHAMPION_ALIAS", "model_name", "folder_name", "Store", "FoundRun", "MODEL_FACTORY",
           "MODEL_KNOBS", "BUILT_IN_MODEL", "FACTORY_PATTERN", "COLORS", "RUN_PARAMS",
           "PIXEL_PLACES"]

# Tags. Every run of a study carries ROLE (parent | trial) and STUDY (the study's name); a
# trial run carries STATE (one of State) and, where its model was logged, MODEL_URI.
ROLE, STUDY, STATE = "allsearch.role", "allsearch.study", "state"
# On a confirmation's parent run (python -m allsearch.confirm): the study it confirms.
CONFIRMS = "allsearch.confirms"
MODEL_URI = "model_uri"
# "true" on a run whose network predicted one class for every test image (any of its seeds).
COLLAPSED = "collapsed"
# A hash of what makes two runs the same computation (hyperparameters, seeds, data, precision):
# the duplicate rule of every engine looks runs up by it (allsearch.tracking.tracked.config_key).
CONFIG_KEY = "allsearch.config_key"
# The run id a run had in a record folder (python -m allsearch.study --record DIR), once imported.
RECORDED_ID = "allsearch.recorded_id"
# The Optuna study user attribute that holds the MLflow parent run's id.
PARENT_ATTR = "mlflow_parent_run_id"
# The Optuna study user attribute that names its objectives (a resumed study must keep them).
OBJECTIVES_ATTR = "objectives"

# Params of every trial run beside its hyperparameters: the network's factory (module:function;
# BUILT_IN_MODEL for the paper's CNN family) and, for a network of your own, its knobs as one
# JSON object (each knob is a param of its own too; this one gives their values back typed).
MODEL_FACTORY, MODEL_KNOBS = "model_factory", "model_knobs"
BUILT_IN_MODEL = "allsearch.training.model:build_cnn"
# A factory's text form (--model, a space's `model:`): MODULE:FUNCTION, each a dotted name.
FACTORY_PATTERN = r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$"
# The image settings (--color; --image-size), params of every run as `color` and `image_size`.
COLORS = ("gray", "rgb")
# Where a dataset's decoded pixels stay (--pixels; allsearch.data.pixel_cache).
PIXEL_PLACES = ("auto", "memory", "disk")
# The params a trial run logs besides its hyperparameters: no knob of a network may take one.
RUN_PARAMS = frozenset({
    "precision", "seed", "trial_number", "engine", "variant", "data_fingerprint", "split_seed",
    "n_train", "class_names", "tuner", "config_rank", "split", "group_pattern", "groups",
    "block_size", "embargo", "image_size", "color", MODEL_FACTORY, MODEL_KNOBS})

# Metrics logged per epoch (step = epoch).
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")
# Per-class test recall is logged as RECALL_PREFIX + the class name.
RECALL_PREFIX = "test_recall_"

State = Literal["COMPLETE", "PRUNED", "FAIL", "KILLED"]
# Our trial states -> MLflow run statuses; PRUNED is a normal end, marked by the `state` tag.
RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED", "KILLED": "KILLED"}

# The paper's Table 1, best row (one run): what every summary and leaderboard compares with.
PAPER_TABLE1_BEST = {"val_accuracy": 0.80, "test_accuracy": 0.82}

# models:/allsearch-<study>@champion is the best model of a study.
CHAMPION_ALIAS = "champion"


def folder_name(name: str) -> str:
    """A study name as a folder name: safe (letters, digits, `._-`, never `..`), at most 80
    characters, and distinct for distinct names (a hash where anything was changed)."""
    import hashlib
    import re

    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "study"
    if safe == name and len(name) <= 80:
        return name
    return f"{safe[:64]}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"


def model_name(study_name: str) -> str:
    """The registered model of a study (MLflow refuses `/` and long names there)."""
    return f"allsearch-{folder_name(study_name)}"


# A child run found by its tags: (run id, its metrics, its tags).
FoundRun = tuple[str, dict[str, float], dict[str, str]]


class Store(Protocol):
    """Where a study writes its runs: an MLflow store (allsearch.tracking.tracking.Tracker) or a record
    folder (allsearch.tracking.recorder.Recorder). The trial code, the engines and the study's life
    (allsearch.tracking.tracked, allsearch.engines.lifecycle) take a Store and never ask which one it is: what
    differs is each one's to do (a record folder registers no model: its import does)."""

    location: str  # how an error names it: "MLflow store '...'", "record folder '...'"
    folders: tuple[str, ...]  # the local folders it writes: a full disk is named by one

    # Study (parent) runs.
    def find_parent(self, study_name: str) -> str | None: ...
    def start_parent(self, study_name: str, settings: dict[str, Any],
                     tags: dict[str, Any] | None = None) -> str: ...
    def resume_parent(self, run_id: str, settings: dict[str, Any]) -> None: ...

    # Trial (child) runs, and reading runs back.
    def start_run(self, *, parent_id: str | None, name: str, params: dict[str, Any],
                  tags: dict[str, Any]) -> str: ...
    def find_run(self, parent_id: str, tags: dict[str, str]) -> FoundRun | None: ...
    def run_tags(self, run_id: str) -> dict[str, str]: ...
    def run_metrics(self, run_id: str) -> dict[str, float]: ...
    def run_params(self, run_id: str) -> dict[str, str]: ...
    def run_status(self, run_id: str) -> str: ...
    def runs_frame(self, filter_string: str = "") -> pd.DataFrame: ...

    # Writing to a run.
    def log_params(self, run_id: str, values: dict[str, Any]) -> None: ...
    def log_metrics(self, run_id: str, metrics: dict[str, float], *, step: int = 0) -> None: ...
    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None: ...
    def log_figure(self, run_id: str, figure: Any, name: str) -> None: ...
    def log_text(self, run_id: str, text: str, name: str) -> None: ...
    def log_dict(self, run_id: str, values: dict[str, Any], name: str) -> None: ...
    def log_model(self, run_id: str, *, network: Any, class_names: tuple[str, ...],
                  hparams: dict[str, Any], pipeline: Any | None) -> str: ...
    def end_run(self, run_id: str, status: str = "FINISHED") -> None: ...

    def register_champion(self, model_uri: str, model_name: str) -> str | None:
        """Register a logged model as the study's champion; its version, or None where the
        store registers no models."""
        ...

# The files of a model folder (a record's, and the champion pyfunc's artifacts).
NETWORK_FILE = "model.keras"
PIPELINE_FILE = "feature_pipeline.npz"
