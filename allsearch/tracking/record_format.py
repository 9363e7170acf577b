"""A record folder's format, read as untrusted input: every line, name and file checked.

A record folder (allsearch.tracking.recorder) travels between machines, so its import
(allsearch.engines.importer) treats it as untrusted: `check_record` reads and checks all of it before
anything is written to a store, and the replay reads its files through the same checks.

- Events files are plain files inside the folder, read line by line, at most MAX_LINE_BYTES
  a line; every line is a JSON object with the fields its op needs, of the right types,
  nested at most MAX_DEPTH deep. Only a file's last line may be cut off (a crash while it was
  written): it is skipped, as its call did not complete.
- A run id is letters, digits, `-` and `_`; a run is started once, before its other lines,
  and a trial's parent is another run, a study's.
- An artifact name stays in its run's folder (relative, no `..`); every file a line names is
  a regular file that resolves inside the folder (no link out of it, no device).
- A model is a Keras file, its class names and hyperparameters (JSON) and, for HOG/PCA
  features, the pipeline as numbers (allsearch.data.features.load_pipeline): nothing is unpickled.

Imports neither mlflow nor TensorFlow.
"""

from __future__ import annotations

import json
import math
import os
import posixpath
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from allsearch.core.contract import NETWORK_FILE, PIPELINE_FILE
from allsearch.core.errors import ConfigError

__all__ = ["RECORD_SCHEME", "MODEL_DIR", "NETWORK_FILE", "PIPELINE_FILE", "MODEL_META",
           "MAX_LINE_BYTES", "MAX_DEPTH", "MAX_TEXT_BYTES", "MAX_ARTIFACT_BYTES", "MAX_MODEL_BYTES", "Event", "RunEvents", "Record",
           "read_events", "check_record", "record_file", "read_text_file", "read_json_file",
           "ModelFiles", "model_files"]

RECORD_SCHEME = "record:"
MODEL_DIR = "model"
# A model's files, in a record and in the model MLflow logs (allsearch.training.serving).
OLD_PIPELINE_FILE = "feature_pipeline.joblib"  # a pickle, written before version 0.2: never read
MODEL_META = "model.json"
EVENTS_GLOB = "events-*.jsonl"
MAX_LINE_BYTES = 1 << 20  # an event is a few KB; the largest, a study's settings, about 3 KB
MAX_DEPTH = 32  # a param's value (a search space's parameters) nests 3 deep
MAX_TEXT_BYTES = 64 << 20  # a text or dict artifact is read whole; a trial's are under 1 MB
MAX_META_BYTES = 1 << 20
# A figure is copied whole into the store, a model's Keras file loaded whole: bounds far
# above what a study writes, below what would fill a store's disk or the memory.
MAX_ARTIFACT_BYTES = 64 << 20
MAX_MODEL_BYTES = 512 << 20
RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# The characters MLflow allows in a param, metric or tag name.
KEY = re.compile(r"[\w./ :-]{1,250}")
STATUSES = ("FINISHED", "FAILED", "KILLED")


@dataclass
class Event:
    """One checked line: where it is (`DIR/runs/events-....jsonl line N`) and what it says."""

    where: str
    data: dict[str, Any]

    @property
    def op(self) -> str:
        return self.data["op"]

    @property
    def run(self) -> str:
        return self.data["run"]


@dataclass
class RunEvents:
    """One run's lines, its start first."""

    run_id: str
    experiment: str
    parent: str | None
    is_parent: bool
    events: list[Event] = field(default_factory=list)


@dataclass
class Record:
    """A checked record: its runs, studies' parent runs first, each in the order it started."""

    folder: Path
    runs: list[RunEvents]


# ----------------------------------------------------------------------------- one line


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a text", bool: "true/false",
            type(None): "null"}.get(type(value), "a number")


def _too_deep(value: Any) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return False


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _as_float(value: Any) -> float | None:
    """`value` as a float, or None if it is no number or a whole number too large for a float
    (float(10**400) raises OverflowError, which no later reader of the line expects)."""
    if not _number(value):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def _finite(value: Any) -> bool:
    number = _as_float(value)
    return number is not None and math.isfinite(number)


def _text(value: Any, limit: int = 500) -> bool:
    return (isinstance(value, str) and 0 < len(value) <= limit
            and not any(ord(c) < 32 or ord(c) == 127 for c in value))


def _path_not_unique(key: str) -> bool:
    """MLflow's rule too: a name is also a file name, which must not resolve to another."""
    norm = posixpath.normpath(key)
    return norm != key or norm == "." or norm.startswith(("..", "/"))


def _mapping(value: Any, *, values: str) -> str | None:
    """What is wrong with a params, tags or metrics object (None: nothing)."""
    if not isinstance(value, dict):
        return f"must be an object of names and values, got {_kind(value)}"
    for key, item in value.items():
        if not KEY.fullmatch(key) or _path_not_unique(key):
            return f"has the name {key[:80]!r}, which MLflow refuses (letters, digits, _-./: and spaces)"
        if values == "tags" and key.startswith("mlflow."):
            return f"sets MLflow's own tag {key!r}"
        if values == "metrics" and item is not None and _as_float(item) is None:
            # NaN and infinity pass: a native run logs them too (the Tracker leaves them out).
            return (f"has the value {_kind(item)} for {key!r}; a metric is a number"
                    if not _number(item) else f"has the value {str(item)[:40]}... for {key!r}, "
                    f"too large for a metric (a float)")
    if values != "metrics" and _too_deep(value):
        return f"is nested deeper than {MAX_DEPTH} levels"
    return None


def artifact_name_problem(name: Any) -> str | None:
    """What is wrong with an artifact name (None: nothing)."""
    if not _text(name, 1000):
        return f"artifact name {str(name)[:80]!r} is not a file name"
    parts = name.split("/")
    if PurePosixPath(name).is_absolute() or "\\" in name or ".." in parts:
        return f"artifact name {name!r} leaves the run's folder"
    if any(part in ("", ".") for part in parts):
        return f"artifact name {name!r} is not a file name"
    return None


def _is(value: Any, what: str) -> str:
    return f"is {str(value)[:80]!r}, not {what}"


# What each kind of field must be: a check returns None, or what is wrong with the value.
_CHECKS: dict[str, Any] = {
    "number": lambda v: None if _finite(v) else (
        f"must be a finite number, got {_kind(v) if not _number(v) else str(v)[:40]}"),
    "run id": lambda v: None if isinstance(v, str) and RUN_ID.fullmatch(v) else (
        _is(v, "a run id (letters, digits, - and _)")),
    "parent": lambda v: None if v is None else _CHECKS["run id"](v),
    "study": lambda v: None if _text(v, 250) and not set(v) & set("'\"`\\") else (
        _is(v, "a study name (at most 250 characters, no quotes)")),
    "name": lambda v: None if _text(v, 250) else _is(v, "a run name"),
    "text": lambda v: None if _text(v, 1000) else f"must be a text, got {_kind(v)}",
    "params": lambda v: _mapping(v, values="params"),
    "tags": lambda v: _mapping(v, values="tags"),
    "metrics": lambda v: _mapping(v, values="metrics"),
    "step": lambda v: None if _finite(v) and isinstance(v, int) and 0 <= v < 2**63 else (
        _is(v, "a whole number >= 0")),
    "artifact": artifact_name_problem,
    "status": lambda v: None if v in STATUSES else _is(v, f"one of {list(STATUSES)}"),
}
_COMMON = {"t": "number", "op": "text", "run": "run id", "experiment": "study"}
_FIELDS: dict[str, dict[str, str]] = {
    "start_parent": {"name": "study", "tags": "tags", "params": "params"},
    "resume_parent": {"params": "params"},
    "start_run": {"parent": "parent", "name": "name", "params": "params", "tags": "tags"},
    "params": {"params": "params"},
    "metrics": {"metrics": "metrics", "step": "step"},
    "tags": {"tags": "tags"},
    "figure": {"name": "artifact"},
    "text": {"name": "artifact"},
    "dict": {"name": "artifact"},
    "model": {"uri": "text"},
    "end": {"status": "status"},
}


def _check_event(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: not an event (a JSON object), got {_kind(data)}")
    op = data.get("op")
    if not isinstance(op, str) or op not in _FIELDS:  # a list or an object is not hashable
        raise ConfigError(f"{where}: unknown op {str(op)[:40]!r} (one of {', '.join(_FIELDS)})")
    for name, kind in {**_COMMON, **_FIELDS[op]}.items():
        if name not in data:
            raise ConfigError(f"{where}: a {op!r} event needs {name!r}")
        problem = _CHECKS[kind](data[name])
        if problem is not None:  # an artifact name's message names it already
            raise ConfigError(f"{where}: {problem}" if kind == "artifact"
                              else f"{where}: {name!r} {problem}")
    return data


def _lines(path: Path, shown: str) -> list[Event]:
    """The checked events of one events file, streamed line by line."""
    events = []
    with open(path, "rb") as stream:
        number = 0
        while raw := stream.readline(MAX_LINE_BYTES + 1):
            number += 1
            where = f"{shown} line {number}"
            if len(raw) > MAX_LINE_BYTES:
                raise ConfigError(f"{where}: longer than {MAX_LINE_BYTES >> 20} MiB (an event "
                                  f"is a few KB)")
            try:
                data = json.loads(raw.decode("utf-8"))
            except RecursionError:
                raise ConfigError(f"{where}: nested deeper than {MAX_DEPTH} levels") from None
            except ValueError as exc:  # also JSONDecodeError and UnicodeDecodeError
                if not raw.endswith(b"\n"):
                    break  # the last line, cut off by a crash: its call did not complete
                reason = (f"{exc.msg} at column {exc.pos + 1}"
                          if isinstance(exc, json.JSONDecodeError) else str(exc)[:80])
                raise ConfigError(f"{where}: not JSON ({reason})") from None
            events.append(Event(where, _check_event(data, where)))
    return events


def record_file(root: Path, path: Path, where: str, what: str = "artifact file",
                limit: int | None = None) -> Path:
    """`path`, resolved, if it is a regular file inside the record `root` (no link out of
    it, no device or pipe) of at most `limit` bytes; `where` (the line that names it, or "")
    starts the error."""
    real = Path(os.path.realpath(path))
    said = f"{where}: {what} '{path}'" if where else f"{what} '{path}'"
    if not real.is_relative_to(os.path.realpath(root)):
        raise ConfigError(f"{said} leads outside the record (to {real})")
    try:
        found = os.stat(real)
    except FileNotFoundError:
        raise ConfigError(f"{said} is missing") from None
    except OSError as exc:
        raise ConfigError(f"{said} cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(found.st_mode):
        raise ConfigError(f"{said} is not a regular file (a device, a pipe or a folder)")
    if limit is not None and found.st_size > limit:
        raise ConfigError(f"{said} is larger than {limit >> 20} MiB ({found.st_size >> 20} MiB), "
                          f"more than allsearch ever records there")
    return real


def read_events(folder: str | Path) -> list[Event]:
    """Every recorded call, checked line by line, in the order they were made (over all
    processes: by time, then file, then line)."""
    root = Path(folder)
    events = []
    for path in sorted((root / "runs").glob(EVENTS_GLOB)):
        shown = str(root / "runs" / path.name)
        real = record_file(root, path, "", "events file")
        events += [(e.data["t"], path.name, n, e) for n, e in enumerate(_lines(real, shown))]
    return [event for *_, event in sorted(events, key=lambda e: e[:3])]


# ----------------------------------------------------------------------------- files


def _read_bytes(path: Path, where: str, limit: int) -> bytes:
    try:
        with open(path, "rb") as stream:
            if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
                raise ConfigError(f"{where}: '{path}' is not a regular file")
            data = stream.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"{where}: '{path}' cannot be read ({exc.strerror})") from None
    if len(data) > limit:
        raise ConfigError(f"{where}: '{path}' is larger than {limit >> 20} MiB")
    return data


def read_text_file(path: Path, where: str) -> str:
    """A text artifact's content (UTF-8, at most MAX_TEXT_BYTES)."""
    try:
        return _read_bytes(path, where, MAX_TEXT_BYTES).decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: '{path}' is not UTF-8 text") from None


def read_json_file(path: Path, where: str, limit: int = MAX_TEXT_BYTES) -> dict[str, Any]:
    """A JSON object from a file (a dict artifact, a model's meta)."""
    try:
        value = json.loads(_read_bytes(path, where, limit).decode("utf-8"))
    except (ValueError, RecursionError):
        raise ConfigError(f"{where}: '{path}' is not a JSON file") from None
    if not isinstance(value, dict) or _too_deep(value):
        raise ConfigError(f"{where}: '{path}' is not a JSON object nested at most {MAX_DEPTH} deep")
    return value


@dataclass
class ModelFiles:
    """A recorded model's files, checked: the Keras file, its meta, its pipeline (or None)."""

    network: Path
    class_names: tuple[str, ...]
    hparams: dict[str, Any]
    pipeline: Path | None


def model_files(root: Path, run: str, uri: str, where: str) -> ModelFiles:
    """The files of the model a `model` line names, each checked; the HOG/PCA pipeline is
    read as numbers (allsearch.data.features.load_pipeline) to check it."""
    if uri != f"{RECORD_SCHEME}{run}/{MODEL_DIR}":
        raise ConfigError(f"{where}: model uri {uri[:80]!r} is not {RECORD_SCHEME}{run}/{MODEL_DIR}")
    folder = root / "runs" / run / MODEL_DIR
    meta = read_json_file(record_file(root, folder / MODEL_META, where, "model file"), where,
                          MAX_META_BYTES)
    names, hparams = meta.get("class_names"), meta.get("hparams")
    if not (isinstance(names, list) and names and all(_text(n, 250) for n in names)
            and isinstance(hparams, dict)):
        raise ConfigError(f"{where}: '{folder / MODEL_META}' needs class_names (texts) and "
                          f"hparams (an object)")
    network = record_file(root, folder / NETWORK_FILE, where, "model file", MAX_MODEL_BYTES)
    pipeline = None
    if hparams.get("features", "pixels") != "pixels":
        if not (folder / PIPELINE_FILE).exists() and (folder / OLD_PIPELINE_FILE).exists():
            raise ConfigError(f"{where}: '{folder}' holds its HOG/PCA pipeline as a pickle "
                              f"({OLD_PIPELINE_FILE}, recorded before allsearch kept it as "
                              f"numbers), which an import never loads")
        pipeline = record_file(root, folder / PIPELINE_FILE, where, "model file")
        from allsearch.data.features import load_pipeline

        try:
            load_pipeline(pipeline)
        except ValueError as exc:
            raise ConfigError(f"{where}: '{folder / PIPELINE_FILE}' {exc}") from None
    return ModelFiles(network, tuple(names), hparams, pipeline)


# ----------------------------------------------------------------------------- the record


def check_record(folder: str | Path) -> Record:
    """The whole record, checked (every line, run id, name and file), before any replay."""
    root = Path(folder)
    runs: dict[str, RunEvents] = {}
    models: dict[str, str] = {}  # recorded model URI -> the run that logged it
    for event in read_events(root):
        data, run, where = event.data, event.run, event.where
        if event.op in ("start_parent", "start_run"):
            if run in runs:
                raise ConfigError(f"{where}: run id '{run}' is already used by the run started "
                                  f"at {runs[run].events[0].where}")
            parent = data.get("parent") if event.op == "start_run" else None
            if parent == run:
                raise ConfigError(f"{where}: run '{run}' names itself as its parent")
            if parent is not None and not (parent in runs and runs[parent].is_parent
                                           and runs[parent].experiment == data["experiment"]):
                raise ConfigError(f"{where}: parent run '{parent}' is not a study of "
                                  f"'{data['experiment']}' started earlier in the record")
            runs[run] = RunEvents(run, data["experiment"], parent, event.op == "start_parent")
        elif run not in runs:
            raise ConfigError(f"{where}: run '{run}' is not started by an earlier line")
        elif runs[run].experiment != data["experiment"]:
            raise ConfigError(f"{where}: run '{run}' belongs to '{runs[run].experiment}', not "
                              f"'{data['experiment']}'")
        elif event.op == "resume_parent" and not runs[run].is_parent:
            raise ConfigError(f"{where}: run '{run}' is a trial, not a study to resume")
        else:
            _check_files(root, event, runs, models)
        runs[run].events.append(event)
    ordered = list(runs.values())
    return Record(root, [r for r in ordered if r.is_parent] + [r for r in ordered if not r.is_parent])


def _check_files(root: Path, event: Event, runs: dict[str, RunEvents],
                 models: dict[str, str]) -> None:
    data, run, where = event.data, event.run, event.where
    if event.op in ("figure", "text", "dict"):
        path = record_file(root, root / "runs" / run / data["name"], where,
                           limit=MAX_ARTIFACT_BYTES)
        if event.op == "text":
            read_text_file(path, where)
        elif event.op == "dict":
            read_json_file(path, where)
    elif event.op == "model":
        model_files(root, run, data["uri"], where)
        models[data["uri"]] = run
    elif event.op == "tags":
        for key, value in data["tags"].items():
            if not (isinstance(value, str) and value.startswith(RECORD_SCHEME)):
                continue
            owner = models.get(value)
            if owner is None or list(runs).index(owner) > list(runs).index(run):
                raise ConfigError(f"{where}: tag {key!r} names the model {value[:80]!r}, which "
                                  f"no earlier run of the record logged")
