"""A study's life, whichever engine samples it: prepare, open the parent run, finish.

Both engines (allsearch.engines.optuna_engine, allsearch.engines.kt_engine) call these functions, so the data a
study trains on, its parent run's settings, its summary, champion and leaderboard, and the
runs a dead worker left behind are handled once (docs/design.md, "A study's life").
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from allsearch.core import config as config_mod
from allsearch.core.config import StudyConfig
from allsearch.core.contract import MODEL_URI, STATE, Store, model_name
from allsearch.core.errors import ConfigError, SpaceError, StoreError, cannot_write, first_line, store_errors
from allsearch.core.hardware import package_versions, process_age_s, resolve_precision
from allsearch.core.space import SearchSpace, load_space
from allsearch.core.splits import FIELDS as SPLIT_FIELDS
from allsearch.data.dataset import Dataset, SplitSettings, load_dataset
from allsearch.training.folds import make_folds
from allsearch.training.user_model import PAPER, Factory

__all__ = ["Prepared", "prepare", "study_space", "open_store", "load_data", "base_params", "start",
           "open_parent", "settling", "finish", "close_dead_runs", "ended_by", "worker_id",
           "default_name", "DataWarning", "startup_timings", "PROCESS_ATTR", "process_key",
           "process_ended"]


def worker_id() -> str:
    """Which process on which machine runs a trial (a user attr and a run tag): where to look
    when a worker dies."""
    return f"{socket.gethostname()}:{os.getpid()}"


# A trial's user attr: its process, as process_key says it; a later command on the same machine
# fails the trial of a process that ended at once, with no heartbeat's grace period to wait.
PROCESS_ATTR = "process"


def process_key(pid: int | None = None) -> str | None:
    """This process (or `pid`) so that a later command can tell whether it has ended: the
    machine (host name, boot), the PID namespace (containers share a host name), the pid and
    its start time (a pid is reused). None where /proc cannot tell (not Linux)."""
    pid = os.getpid() if pid is None else pid
    started = _start_ticks(pid)
    place = _this_machine()
    if started is None or place is None:
        return None
    return "/".join((*place, str(pid), str(started)))


def process_ended(key: str) -> bool:
    """Has the process of `key` (process_key) ended? False where this process cannot tell:
    another machine, boot or container, or no /proc."""
    *place, pid, started = key.split("/")
    if len(place) != 3 or tuple(place) != _this_machine() or not pid.isdigit():
        return False
    return _start_ticks(int(pid)) != int(started) if started.isdigit() else False


def _this_machine() -> tuple[str, str, str] | None:
    try:
        boot = open("/proc/sys/kernel/random/boot_id").read().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return socket.gethostname().replace("/", "_"), boot, namespace


def _start_ticks(pid: int) -> int | None:
    """When `pid` started (clock ticks after boot); None when no such process runs (a zombie,
    one that exited but was not reaped yet, has ended too)."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


@dataclass
class Prepared:
    """What every process of a study needs before its first trial."""

    config: StudyConfig  # with the study name, the precision and the network resolved
    space: SearchSpace
    precision_reason: str
    factory: Factory = PAPER  # the network every trial builds (config.model, imported)


def default_name(config: StudyConfig, space: SearchSpace) -> str:
    """The space's name; a KerasTuner study is named after its tuner too (paper-hyperband),
    so that both engines' studies of one space sit side by side."""
    return space.name if config.engine == "optuna" else f"{space.name}-{config.tuner}"


def prepare(config: StudyConfig) -> Prepared:
    """Validate the settings, load the space, resolve the precision, the study name and the
    network (--model wins over the space's `model`; its module is imported here)."""
    from allsearch.training import user_model

    config.validate()
    space = study_space(config)
    config = config.replace(model=config.model if config.model is not None else space.model)
    factory = user_model.load(config.model)
    if factory.built_in:  # --model allsearch.training.model:build_cnn names the default
        config = config.replace(model=None)
    user_model.check_workers(factory, config.workers)
    if not factory.built_in and space.uses_hog_pca():
        raise SpaceError(f"{space.source}: features other than pixels feed the paper's network "
                         f"its HOG/PCA branch; a network of your own (--model {factory.name}) "
                         f"takes the images (input_shape): keep features: pixels")
    precision, reason = resolve_precision(config.precision)
    # Workers get the resolved precision and objectives: every trial of the study trains alike.
    objectives = config.objectives or space.objectives or (space.objective,)
    if config.engine != "optuna" and (len(objectives) > 1 or config.constraints):
        raise ConfigError("--engine keras-tuner optimizes one objective with no constraints "
                          "(it would sum several into one number); use --engine optuna for "
                          "--objectives and --constraint")
    config = config.replace(study_name=config.study_name or default_name(config, space),
                            precision=precision, objectives=tuple(objectives))
    return Prepared(config, space, reason, factory)


def study_space(config: StudyConfig) -> SearchSpace:
    """The study's space; with a network of one's own named (--model), names that are no
    hyperparameter of the paper's network are that network's knobs."""
    return load_space(config.space, own_network=config.model is not None)


def open_store(config: StudyConfig) -> Store:
    """Where the study's runs go: MLflow (a Tracker), or a record folder (a Recorder)."""
    assert config.study_name is not None
    if config.record is not None:
        from allsearch.tracking.recorder import Recorder

        return Recorder(config.record, config.study_name)
    from allsearch.tracking.tracking import Tracker

    return Tracker(config.study_name, tracking_uri=config.tracking_uri,
                   server_wait=config.server_wait)


def load_data(config: StudyConfig, space: SearchSpace, factory: Factory | None = None) -> Dataset:
    """The study's dataset (--image-size, --color), with the HOG/PCA features when the space
    can use them; refuses a space whose networks the images cannot take, and a network of
    one's own (`factory`, checked once, in the study's first process) that cannot be built or
    trained on them (allsearch.training.user_model.check). Skipped files are said in a few lines (the
    parent run gets the whole list); a damaged cache is said and rebuilt."""
    from allsearch.data.dataset import CacheWarning
    from allsearch.training.model import max_conv_layers

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = load_dataset(config.data, split_seed=config.split_seed, split=SplitSettings(
            *(getattr(config, name) for name in SPLIT_FIELDS)),
            image_size=config.image_size, color=config.color, pixels=config.pixels)
        if space.uses_hog_pca():
            from allsearch.data.features import add_hog_pca

            dataset = add_hog_pca(dataset)
    for warning in caught:
        if issubclass(warning.category, CacheWarning):
            warnings.warn(str(warning.message), CacheWarning, stacklevel=2)
    skipped = dataset.report.skipped
    if skipped:
        warnings.warn(f"skipped {len(skipped)} file(s) in '{dataset.report.root}' (listed in "
                      f"skipped_files.txt on the parent run), e.g.:", DataWarning, stacklevel=2)
        for path, reason in skipped[:SKIPPED_SHOWN]:
            warnings.warn(f"  skipped {path}: {reason}", DataWarning, stacklevel=2)
    if config.model is not None:
        if factory is not None and config.trainer == "keras":  # a stand-in builds nothing
            from allsearch.training.user_model import check

            check(factory, space, dataset)
        return dataset
    size = dataset.image_shape[0]
    deepest = max_conv_layers(size)
    values = ([space.fixed["conv_layers"]] if "conv_layers" in space.fixed else [])
    if any(p.name == "conv_layers" for p in space.params):
        values += space.param("conv_layers").values()
    too_deep = [v for v in values if v > deepest or v < 1]
    if too_deep:
        raise SpaceError(f"{space.source}: conv_layers {sorted(set(too_deep))} cannot be built "
                         f"on {size}x{size} images; allowed: 1 to {deepest}")
    if config.cv:
        make_folds(dataset, config.cv)  # folds the data cannot give: said before any training
    return dataset


class DataWarning(UserWarning):
    """What the data pipeline left out."""


SKIPPED_SHOWN = 5


def startup_timings(startup: dict[str, float]) -> dict[str, float]:
    """This process's start-up seconds (time_process_start_s, and the `startup` its engine
    measured, e.g. time_data_load_s), once: for the first trial it runs; empty after."""
    if not startup:
        return {}
    timings = dict(startup)
    startup.clear()
    age = process_age_s()
    if age is not None:
        timings["time_process_start_s"] = age - timings.get("time_data_load_s", 0.0)
    return timings


def base_params(dataset: Dataset, engine: str) -> dict[str, Any]:
    """The params every child run of a study carries besides its hyperparameters."""
    return {"engine": engine, "variant": dataset.variant, "data_fingerprint": dataset.fingerprint,
            "split_seed": dataset.split_seed, **dataset.split_settings.params(),
            "n_train": len(dataset.y_train),
            "class_names": list(dataset.class_names), **dataset.image_settings,
            **{f"version.{k}": v for k, v in package_versions().items()}}


def parent_settings(prepared: Prepared, dataset: Dataset) -> dict[str, Any]:
    """The parent run's params: every setting, and what the space and the data were."""
    space, config = prepared.space, prepared.config
    settings = config_mod.settings(config)
    settings.pop("progress", None)
    return {**settings, "space_name": space.name, "space_file": space.source,
            "objective": space.objective, "precision_reason": prepared.precision_reason,
            "data": dataset.report.root, "variant": dataset.variant,
            "data_fingerprint": dataset.fingerprint, "split_sizes": dataset.report.split_sizes,
            "n_skipped": len(dataset.report.skipped),
            "duplicates_dropped": dataset.report.duplicates_dropped,
            "fixed": space.fixed, "baseline": space.baseline or {},
            "space_params": {p.name: {k: v for k, v in asdict(p).items() if v not in (None, (), False)}
                             for p in space.params}}


def start(store: Store, prepared: Prepared, dataset: Dataset, *, known: str | None = None,
          extra: dict[str, Any] | None = None) -> str:
    """Open the study's parent run with its settings (and `extra` ones), and record on it the
    split (split.csv), --cv's folds (folds.csv) and the files the data pipeline skipped.
    Returns its id."""
    settings = {**parent_settings(prepared, dataset), **(extra or {})}
    try:
        parent_id = open_parent(store, str(prepared.config.study_name), settings, known)
        store.log_text(parent_id, dataset.split_csv(), "split.csv")
        if prepared.config.cv:
            store.log_text(parent_id, make_folds(dataset, prepared.config.cv).csv(), "folds.csv")
        skipped = dataset.report.skipped
        if skipped:
            store.log_text(parent_id, "".join(f"{path}\t{reason}\n" for path, reason in skipped),
                           "skipped_files.txt")
    except store_errors() as exc:
        raise StoreError(cannot_write(store.location, exc, store.folders)) from None
    return parent_id


def open_parent(store: Store, name: str, settings: dict[str, Any], known: str | None = None
                ) -> str:
    """The study's parent run, running again: `known` (an id the engine keeps) if the store
    still has it, else the one found by study name, else a new one."""
    if known is not None:
        try:
            store.run_status(known)
        except store_errors():
            warnings.warn(f"the study's parent run {known} is gone from the {store.location}; "
                          f"starting a new one", stacklevel=2)
        else:
            store.resume_parent(known, settings)
            return known
    found = store.find_parent(name)
    if found is not None:
        store.resume_parent(found, settings)
        return found
    return store.start_parent(name, settings)


def ended_by(exc: BaseException) -> str:
    """The status a parent run ends with when `exc` ends its study: KILLED after Ctrl-C or
    SIGTERM, FAILED after anything else (never RUNNING, whatever ended it)."""
    return "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"


@contextlib.contextmanager
def settling(store: Store, status: str) -> Iterator[None]:
    """The writes that settle a study's end (its plots, its stale trials) before `finish`:
    after an error (status FAILED or KILLED: a full disk, a server gone, Ctrl-C) a failed
    write is dropped, and that error alone is said; after a finished study it is a
    StoreError."""
    try:
        yield
    except _store_stops() as exc:
        if status == "FINISHED":
            raise exc if isinstance(exc, StoreError) else StoreError(
                cannot_write(store.location, exc, store.folders)) from None


def finish(store: Store, parent_id: str, config: StudyConfig, status: str, *,
           dead_runs: Sequence[str] = ()) -> None:
    """End the study's parent run with `status` after writing its summary: trial counts, best
    trial, champion model, leaderboard; child runs of dead workers (`dead_runs`, still
    RUNNING) are marked KILLED first. A record folder gets its summary when imported.

    A study that ended on an error (status FAILED: a full disk, a server gone) says that
    error alone: what cannot be written now is left to the next command, which closes the
    runs at its start. A finished study whose end cannot be written raises a StoreError."""
    errors = _store_stops()
    close_dead_runs(store, dead_runs)
    unsaid: BaseException | None = None
    try:
        summarize_on_parent(store, parent_id, config)
    except errors as exc:
        unsaid = exc
    try:
        store.end_run(parent_id, status)
    except errors as exc:
        if status == "FINISHED":
            raise exc if isinstance(exc, StoreError) else StoreError(
                cannot_write(store.location, exc, store.folders)) from None
        return
    if unsaid is not None and status != "FAILED":
        warnings.warn(f"could not write the study summary to the {store.location} "
                      f"({_reason(unsaid)})", stacklevel=2)


def close_dead_runs(store: Store, run_ids: Sequence[str]) -> None:
    """Mark KILLED the runs in `run_ids` still RUNNING: runs of trials whose process ended
    without closing them (killed, or stopped by a store it could not write). Where the store
    cannot be written either, they are left to the next command."""
    for run_id in run_ids:
        try:
            if store.run_status(run_id) == "RUNNING":
                store.set_tags(run_id, {STATE: "KILLED",
                                        "error": "the worker stopped during this trial"})
                store.end_run(run_id, "KILLED")
        except _store_stops():
            continue


def _store_stops() -> tuple[type[BaseException], ...]:
    """What stops a study's writes: a store that cannot be written, raw or said (StoreError)."""
    return (*store_errors(), StoreError)


def _reason(exc: BaseException) -> str:
    """Why a write failed, in a few words (a StoreError's own line, else the driver's)."""
    return str(exc) if isinstance(exc, StoreError) else first_line(exc)[:160]


def summarize_on_parent(store: Store, parent_id: str, config: StudyConfig) -> None:
    """Counts, best trial, champion and leaderboard on the parent run, from its child runs."""
    import pandas as pd

    from allsearch.readers import leaderboard

    runs = store.runs_frame(f"tags.`mlflow.parentRunId` = '{parent_id}'")
    if runs.empty:
        return
    states = runs.get(f"tags.{STATE}")
    store.log_metrics(parent_id, {f"n_{s.lower()}": int((states == s).sum())
                                  for s in ("COMPLETE", "PRUNED", "FAIL")})
    accuracy = runs.get("metrics.val_accuracy", pd.Series(float("nan"), index=runs.index))
    complete = runs[(states == "COMPLETE") & accuracy.notna()]
    # Under constraints the champion is the most accurate trial that meets every one.
    complete = leaderboard.meeting_constraints(complete)
    if not complete.empty:
        # The best validation accuracy; among equals the first run (a duplicate copies it later).
        best = complete.sort_values(["metrics.val_accuracy", "start_time"],
                                    ascending=[False, True]).iloc[0]
        trial = best.get("tags.trial_number")
        store.set_tags(parent_id, {"best.trial_number": trial, "best.mlflow_run_id": best["run_id"]})
        store.log_metrics(parent_id, {"best_val_accuracy": float(best["metrics.val_accuracy"]),
                                      "best_test_accuracy": float(best.get("metrics.test_accuracy",
                                                                           math.nan)),
                                      "best_trial": float(trial) if trial else math.nan})
        uri = best.get(f"tags.{MODEL_URI}")
        if isinstance(uri, str) and uri:
            register_champion(store, uri, model_name(config.study_name or ""), parent_id)
    table = leaderboard.runs_to_table(runs)
    if len(table):
        store.log_text(parent_id, table.to_csv(index=False), "leaderboard.csv")
        store.log_text(parent_id, leaderboard.render(table, "html"), "leaderboard.html")


def register_champion(store: Store, model_uri: str, name: str, parent_id: str) -> None:
    """Point `models:/<name>@champion` at the best trial's model, unless it already does (a
    record folder registers nothing: its champion is registered when imported)."""
    if store.run_tags(parent_id).get("champion.model_uri") == model_uri:
        return
    version = store.register_champion(model_uri, name)
    if version is None:
        return
    store.set_tags(parent_id, {"champion.model_uri": model_uri,
                               "champion": f"models:/{name}@champion (version {version})"})
