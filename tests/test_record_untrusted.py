"""A record folder is untrusted input (issue 27): `study import DIR` writes nothing outside the
store, reads nothing outside the record, runs no code from it, refuses a malformed record in
one line before writing anything, and an interrupted import resumes to what a clean one writes.
Every case runs on real files, and the faults on real processes and signals."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from allsearch import study
from allsearch.core.contract import RECORDED_ID
from allsearch.core.space import HParams
from allsearch.tracking.recorder import read_events
from allsearch.tracking.store import resolve_tracking_uri
from conftest import one_line_error

PARENT, TRIAL, EXPERIMENT = "p" * 32, "t" * 32, "s"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def line(op: str, run: str, t: float, **fields: object) -> dict:
    return {"t": t, "op": op, "run": run, "experiment": EXPERIMENT, **fields}


def small_record(folder: Path, *extra: dict) -> Path:
    """A study with one finished trial that logged one text file; `extra` lines go after
    the trial's text line. Returns the events file."""
    (folder / "runs" / TRIAL).mkdir(parents=True, exist_ok=True)
    (folder / "runs" / TRIAL / "notes.txt").write_text("fine\n")
    lines = [line("start_parent", PARENT, 1, name=EXPERIMENT, params={"trials": 1},
                  tags={"allsearch.role": "parent", "allsearch.study": EXPERIMENT}),
             line("start_run", TRIAL, 2, parent=PARENT, name="trial-0000",
                  params={**HParams().to_dict(), "seed": 0},
                  tags={"allsearch.role": "trial", "state": "RUNNING", "trial_number": 0}),
             line("metrics", TRIAL, 3, metrics={"val_accuracy": 0.5}, step=0),
             line("text", TRIAL, 4, name="notes.txt"),
             *extra,
             line("tags", TRIAL, 10, tags={"state": "COMPLETE"}),
             line("end", TRIAL, 11, status="FINISHED"),
             line("end", PARENT, 12, status="FINISHED")]
    events = folder / "runs" / "events-host-1-1.jsonl"
    events.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return events


def refused(record: Path, capsys: pytest.CaptureFixture, isolated_store: Path) -> str:
    """Import `record`: exit 2, one line, and no store written at all (so no run RUNNING)."""
    assert study.main(["import", str(record)]) == 2
    message = one_line_error(capsys)
    assert not (isolated_store / "mlflow.db").exists()
    assert not (isolated_store / "artifacts").exists()
    return message


def number_of(events: Path, needle: str) -> int:
    """The 1-based number of the line of `events` holding `needle`."""
    return next(n for n, text in enumerate(events.read_text().splitlines(), 1) if needle in text)


# ----------------------------------------------------------------------------- 1: writes


@pytest.mark.parametrize(("op", "name"), [("figure", "../x/y.png"), ("text", "../../x.txt"),
                                          ("dict", "ABSOLUTE/y.json")])
def test_an_artifact_name_that_leaves_its_folder_is_refused_before_anything_is_written(
        op: str, name: str, tmp_path: Path, isolated_store: Path, capsys,
        monkeypatch: pytest.MonkeyPatch) -> None:
    name = name.replace("ABSOLUTE", str(tmp_path / "abs"))
    record = tmp_path / "record"
    (record / "runs" / TRIAL).mkdir(parents=True)
    target = record / "runs" / TRIAL / name  # where the old import read it from
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("{}")
    events = small_record(record, line(op, TRIAL, 5, name=name))
    scratch = tmp_path / "scratch"  # the import's temporary folder
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    message = refused(record, capsys, isolated_store)
    assert message.startswith(f"error: {events} line 5: artifact name '{name}' leaves the "
                              f"run's folder; nothing was imported")
    assert list(scratch.iterdir()) == []


# ----------------------------------------------------------------------------- 2: reads


def test_an_artifact_that_links_out_of_the_record_is_not_read(tmp_path: Path, capsys,
                                                              isolated_store: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET")
    record = tmp_path / "record"
    (record / "runs" / TRIAL).mkdir(parents=True)
    (record / "runs" / TRIAL / "passwd.txt").symlink_to(secret)
    events = small_record(record, line("text", TRIAL, 5, name="passwd.txt"))
    message = refused(record, capsys, isolated_store)
    assert message.startswith(f"error: {events} line 5: artifact file "
                              f"'{record}/runs/{TRIAL}/passwd.txt' leads outside the record "
                              f"(to {secret})")


@pytest.mark.parametrize("what", ["figure", "model"])
def test_a_file_larger_than_its_limit_is_refused_before_anything_is_written(
        what: str, tmp_path: Path, capsys, isolated_store: Path) -> None:
    """A figure was copied whole into the store and a model's Keras file loaded whole,
    whatever their size. Sparse files: their size costs no disk."""
    record = tmp_path / "record"
    model = record / "runs" / TRIAL / "model"
    model.mkdir(parents=True)
    if what == "figure":
        big, limit = record / "runs" / TRIAL / "curves.png", 64
        extra = line("figure", TRIAL, 5, name="curves.png")
    else:
        big, limit = model / "model.keras", 512
        (model / "model.json").write_text(json.dumps({"class_names": ["a", "b"],
                                                      "hparams": {"features": "pixels"}}))
        extra = line("model", TRIAL, 5, uri=f"record:{TRIAL}/model")
    with open(big, "wb") as stream:
        stream.truncate((limit << 20) + 1)
    events = small_record(record, extra)
    message = refused(record, capsys, isolated_store)
    assert message.startswith(f"error: {events} line 5: {'model' if what == 'model' else 'artifact'}"
                              f" file '{big}' is larger than {limit} MiB"), message


def test_a_run_id_that_climbs_out_of_the_record_is_refused(tmp_path: Path, capsys,
                                                           isolated_store: Path) -> None:
    record = tmp_path / "record"
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "secret.txt").write_text("SECRET")
    events = small_record(record, line("start_run", "../../x", 5, parent=PARENT, name="t",
                                       params={}, tags={}),
                          line("text", "../../x", 6, name="secret.txt"))
    message = refused(record, capsys, isolated_store)
    assert message.startswith(f"error: {events} line 5: 'run' is '../../x', not a run id")


# ----------------------------------------------------------------------------- 3: no code


class Bomb:
    """A pickle that creates a file when it is loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("pipeline", ["feature_pipeline.joblib", "feature_pipeline.npz",
                                      "object array"])
def test_a_recorded_model_is_never_unpickled(pipeline: str, tmp_path: Path, capsys,
                                             isolated_store: Path) -> None:
    marker = tmp_path / "code-ran"
    record = tmp_path / "record"
    model = record / "runs" / TRIAL / "model"
    model.mkdir(parents=True)
    (model / "model.keras").write_bytes(b"not a keras file")
    (model / "model.json").write_text(json.dumps({"class_names": ["a", "b"],
                                                  "hparams": {"features": "hog_pca"}}))
    if pipeline == "object array":
        np.savez(model / "feature_pipeline.npz", pca_mean=np.array([Bomb(marker)], dtype=object))
    else:
        (model / pipeline).write_bytes(pickle.dumps(Bomb(marker)))
    events = small_record(record, line("model", TRIAL, 5, uri=f"record:{TRIAL}/model"))
    try:
        code = study.main(["import", str(record)])
    finally:  # checked first: the old import ran the pickle's code, then failed
        assert not marker.exists()
    assert code == 2
    message = one_line_error(capsys)
    assert not (isolated_store / "mlflow.db").exists()
    assert message.startswith(f"error: {events} line 5: '{model}")
    assert ("as a pickle" in message if pipeline.endswith("joblib")
            else "is not an .npz of numbers" in message), message


def crafted_npz(path: Path, how: str) -> None:
    """An .npz whose pca_mean declares 10**13 floats (80 TB) in a few bytes, or whose entry is
    flagged encrypted (bit 0 of its flags, in the local and the central header)."""
    import zipfile

    header = {"descr": "<f8", "fortran_order": False, "shape": (10**13,) if how == "huge" else (2,)}
    with open(path.with_suffix(".npy"), "wb") as stream:
        np.lib.format.write_array_header_1_0(stream, header)
        stream.write(b"\0" * 16)
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(path.with_suffix(".npy"), "pca_mean.npy")
    if how == "encrypted":
        data = bytearray(path.read_bytes())
        for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            at = data.index(signature) + offset
            data[at] |= 1
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["huge", "encrypted"])
def test_a_crafted_pipeline_is_refused_in_one_line(how: str, tmp_path: Path, capsys,
                                                   isolated_store: Path) -> None:
    """Before: the huge shape raised MemoryError (the size limit read the zip's sizes, not the
    declared shape), the encrypted flag RuntimeError; both tracebacks."""
    record = tmp_path / "record"
    model = record / "runs" / TRIAL / "model"
    model.mkdir(parents=True)
    (model / "model.keras").write_bytes(b"not a keras file")
    (model / "model.json").write_text(json.dumps({"class_names": ["a", "b"],
                                                  "hparams": {"features": "hog_pca"}}))
    crafted_npz(model / "feature_pipeline.npz", how)
    events = small_record(record, line("model", TRIAL, 5, uri=f"record:{TRIAL}/model"))
    message = refused(record, capsys, isolated_store)
    assert message.startswith(f"error: {events} line 5: '{model}/feature_pipeline.npz' is not "
                              f"an .npz of numbers ("), message
    assert ("headers declare more than 256 MiB" if how == "huge" else "encrypted") in message, message


def test_the_feature_cache_is_never_unpickled(tmp_path: Path, isolated_store: Path) -> None:
    import warnings

    from allsearch.data.dataset import CacheWarning, load_dataset
    from allsearch.data.features import add_hog_pca
    from allsearch.data.synthetic import write_dataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = load_dataset(write_dataset(tmp_path / "d", per_class=20, duplicate=False,
                                             junk=False))
        first = add_hog_pca(dataset, n_components=10)
    [cache] = (isolated_store / "cache").glob("hogpca-*")
    marker = tmp_path / "code-ran"
    cache.write_bytes(pickle.dumps(Bomb(marker)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = add_hog_pca(dataset, n_components=10)
    assert not marker.exists()
    assert [w for w in caught if issubclass(w.category, CacheWarning)
            and "damaged" in str(w.message)]
    np.testing.assert_array_equal(again.features.val, first.features.val)
    with np.load(cache, allow_pickle=False) as arrays:  # rewritten: numbers only
        np.testing.assert_array_equal(arrays["val"], first.features.val)


def test_a_keras_model_with_code_is_refused_in_safe_mode(tmp_path: Path, capsys) -> None:
    from allsearch.core.hardware import start_tensorflow

    start_tensorflow()
    import keras

    marker = tmp_path / "code-ran"
    where = str(marker)  # the lambda's code (saved as bytecode) creates this file when run
    record = tmp_path / "record"
    model = record / "runs" / TRIAL / "model"
    model.mkdir(parents=True)
    inputs = keras.Input((4,))
    layer = keras.layers.Lambda(lambda x: (open(where, "w").close(), x)[1], output_shape=(4,))
    keras.Model(inputs, keras.layers.Dense(2)(layer(inputs))).save(model / "model.keras")
    unsafe = keras.saving.load_model(model / "model.keras", safe_mode=False)
    unsafe(np.zeros((1, 4), dtype=np.float32))
    assert marker.exists()  # the file does run code when it is loaded without safe mode
    marker.unlink()
    (model / "model.json").write_text(json.dumps({"class_names": ["a", "b"],
                                                  "hparams": {"features": "pixels"}}))
    events = small_record(record, line("model", TRIAL, 5, uri=f"record:{TRIAL}/model"))
    assert study.main(["import", str(record)]) == 2
    message = one_line_error(capsys)
    assert message.startswith(f"error: {events} line 5: the model '{model}/model.keras' cannot "
                              f"be loaded in Keras' safe mode"), message
    assert not marker.exists()
    client = MlflowClient(resolve_tracking_uri())
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              run_view_type=3)  # deleted ones too
    assert [r.info.status for r in runs if r.info.lifecycle_stage == "active"] == ["FAILED"]


def test_an_error_during_the_replay_is_one_line_naming_its_line(tmp_path: Path, capsys) -> None:
    """A model that loads in safe mode but whose pixel input has no fixed size: logging it
    raised TypeError in serving (int(None)), a traceback. Now one line that names the event's
    line, and the import leaves no run RUNNING."""
    from allsearch.core.hardware import start_tensorflow

    start_tensorflow()
    import keras

    record = tmp_path / "record"
    model = record / "runs" / TRIAL / "model"
    model.mkdir(parents=True)
    inputs = keras.Input((None, None, 1))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3)(inputs))
    keras.Model(inputs, keras.layers.Dense(2)(pooled)).save(model / "model.keras")
    (model / "model.json").write_text(json.dumps({"class_names": ["a", "b"],
                                                  "hparams": {"features": "pixels"}}))
    events = small_record(record, line("model", TRIAL, 5, uri=f"record:{TRIAL}/model"))
    assert study.main(["import", str(record)]) == 2
    message = one_line_error(capsys)
    assert message.startswith(f"error: {events} line 5: "), message
    assert "TypeError" in message and "record the study again" in message, message
    client = MlflowClient(resolve_tracking_uri())
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.status for r in runs] == ["FAILED"]  # the parent; the trial is deleted


# ----------------------------------------------------------------------------- 4: malformed


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


MALFORMED = {
    "not JSON": ('{"t": 5, "op": "metrics", ', "not JSON (Expecting property name"),
    "not an object": ("[1, 2]", "not an event (a JSON object), got a list"),
    "params as a list": (json.dumps(line("params", TRIAL, 5, params=[1, 2])),
                         "'params' must be an object of names and values, got a list"),
    "100k-deep nesting": (deep(100_000), "nested deeper than 32 levels"),
    "deep params": (json.dumps(line("params", TRIAL, 5, params={})).replace(
        "{}", '{"a": ' + deep(40) + "}"), "'params' is nested deeper than 32 levels"),
    "a 50 MB line": ("HUGE", "longer than 1 MiB"),
    "an unknown op": (json.dumps(line("exec", TRIAL, 5)), "unknown op 'exec'"),
    "a metric as text": (json.dumps(line("metrics", TRIAL, 5, metrics={"a": "1"}, step=0)),
                         "'metrics' has the value a text for 'a'; a metric is a number"),
    "MLflow's own tag": (json.dumps(line("tags", TRIAL, 5, tags={"mlflow.parentRunId": "x"})),
                         "'tags' sets MLflow's own tag 'mlflow.parentRunId'"),
    "a run never started": (json.dumps(line("params", "q" * 32, 5, params={})),
                            f"run '{'q' * 32}' is not started by an earlier line"),
    # A whole number too large for a float: float() raised OverflowError (a traceback, and for
    # a metric only in the replay, after the study's runs were written).
    "a huge time": (json.dumps(line("params", TRIAL, 10**400, params={})),
                    "'t' must be a finite number, got 1000000000"),
    "a huge metric": (json.dumps(line("metrics", TRIAL, 5, metrics={"a": 10**400}, step=0)),
                      "'metrics' has the value 1000000000"),
    "an op as a list": (json.dumps({**line("params", TRIAL, 5, params={}), "op": ["x"]}),
                        "unknown op \"['x']\""),
    "an op as an object": (json.dumps({**line("params", TRIAL, 5, params={}), "op": {}}),
                           "unknown op '{}'"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_line_is_refused_in_one_line(case: str, tmp_path: Path, capsys,
                                                 isolated_store: Path) -> None:
    bad, said = MALFORMED[case]
    if bad == "HUGE":
        bad = json.dumps(line("params", TRIAL, 5, params={"a": "x" * 50_000_000}))
    record = tmp_path / "record"
    events = small_record(record)
    lines = events.read_text().splitlines(keepends=True)
    lines.insert(4, bad + "\n")  # line 5, with lines after it
    events.write_text("".join(lines))
    message = refused(record, capsys, isolated_store)
    assert message.startswith(f"error: {events} line 5: {said}"), message[:300]


@pytest.mark.parametrize("kind", ["link to /dev/zero", "pipe", "folder"])
def test_an_events_file_that_is_not_a_file_is_refused(kind: str, tmp_path: Path, capsys,
                                                      isolated_store: Path) -> None:
    record = tmp_path / "record"
    small_record(record)
    events = record / "runs" / "events-host-2-2.jsonl"
    if kind == "pipe":
        os.mkfifo(events)  # reading it would wait for ever
    elif kind == "folder":
        events.mkdir()
    else:
        events.symlink_to("/dev/zero")  # reading it would fill the memory
    message = refused(record, capsys, isolated_store)
    expected = ("leads outside the record (to /dev/zero)" if kind.startswith("link")
                else "is not a regular file")
    assert message.startswith(f"error: events file '{events}' {expected}"), message


def test_a_line_cut_off_by_a_crash_is_skipped_not_refused(tmp_path: Path) -> None:
    record = tmp_path / "record"
    events = small_record(record)
    with open(events, "a") as stream:
        stream.write('{"t": 13, "op": "metrics", "run": "')  # the process died here
    [report] = study.import_record(str(record))
    assert (report.imported, report.skipped) == (1, 0)


# The import's peak memory: VmHWM, this process's own (ru_maxrss keeps the high-water mark of
# the process that started it, here pytest's, across exec).
MEASURE = """
import sys
from allsearch import study
code = study.main(["import", sys.argv[1]])
status = open("/proc/self/status").read().split("VmHWM:")[1].split()[0]
print(status, file=sys.stderr)
sys.exit(code)
"""


def test_a_huge_line_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    """A 50 MB line costs the import no more memory than a 3-byte one: neither is read whole."""
    peaks, errors = {}, {}
    for size in (1, 50_000_000):
        record = tmp_path / f"record-{size}"
        events = small_record(record)
        with open(events, "a") as stream:
            stream.write("[" + "1" * size + "]\n")  # not an event, however long
            stream.write(json.dumps(line("end", PARENT, 13, status="FINISHED")) + "\n")
        done = subprocess.run([sys.executable, "-c", MEASURE, str(record)], capture_output=True,
                              text=True, timeout=300, env=ENV, cwd=tmp_path)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
        *_, errors[size], peak = done.stderr.strip().splitlines()
        peaks[size] = int(peak) / 1024  # kB -> MB
    assert "line 8: not an event (a JSON object), got a list" in errors[1]
    assert "line 8: longer than 1 MiB" in errors[50_000_000]
    # Read whole, the line would take 50 MB as bytes and as much again as text.
    assert peaks[50_000_000] - peaks[1] < 10, peaks


# ----------------------------------------------------------------------------- 5: resume


SPACE = """
name: tiny
params:
  batch_size: {type: categorical, choices: [8, 16]}
fixed: {epochs: 2, conv_layers: 2, dense_units: 16}
baseline: {batch_size: 8}
"""

# The import, stopped by a real signal it sends itself right after the second trial's first
# artifact (a figure) is in the store: the trial then holds 1 of its 4 artifacts.
STOPPED_IMPORT = """
import os, signal, sys
from allsearch import study
from allsearch.tracking.tracking import Tracker
real, seen = Tracker.log_image_file, []
def log_image_file(self, run_id, path, name):
    real(self, run_id, path, name)
    seen.append(name)
    if seen.count("learning_curves.png") == 2:
        os.kill(os.getpid(), getattr(signal, sys.argv[2]))
Tracker.log_image_file = log_image_file
sys.exit(study.main(["import", sys.argv[1]]))
"""
# The same import, killed right after the first trial's model is in the store (its figures,
# tables and end state are not).
KILLED_AFTER_MODEL = """
import os, signal, sys
from allsearch import study
from allsearch.tracking.tracking import Tracker
real = Tracker.log_model
def log_model(self, run_id, **model):
    uri = real(self, run_id, **model)
    os.kill(os.getpid(), signal.SIGKILL)
Tracker.log_model = log_model
sys.exit(study.main(["import", sys.argv[1]]))
"""
# Tags that name MLflow run or model ids, which differ from store to store.
IDS = {"mlflow.parentRunId", "model_uri", "best.mlflow_run_id", "champion.model_uri",
       "champion", "mlflow.log-model.history"}


def snapshot(uri: str) -> dict:
    """Everything an import wrote that does not depend on MLflow's ids, by recorded run."""
    client = MlflowClient(uri, registry_uri=uri)
    found = {}
    for experiment in client.search_experiments():
        runs = client.search_runs([experiment.experiment_id])
        recorded = [r.data.tags[RECORDED_ID] for r in runs]
        assert len(set(recorded)) == len(recorded)  # no run imported twice
        for run in runs:
            run_id = run.info.run_id
            artifacts = sorted((a.path, a.file_size) for a in client.list_artifacts(run_id)
                               if not a.path.startswith(("leaderboard", "study.json")))
            history = sorted((key, m.step, m.value) for key in run.data.metrics
                             for m in client.get_metric_history(run_id, key))
            tags = {k: v for k, v in run.data.tags.items() if k not in IDS}
            found[run.data.tags[RECORDED_ID]] = (
                experiment.name, run.info.run_name, run.info.status, run.data.params, tags,
                history, artifacts)
        found[f"models of {experiment.name}"] = len(client.search_logged_models(
            [experiment.experiment_id]))
    found["versions"] = sorted((m.name, len(client.search_model_versions(f"name = '{m.name}'")))
                               for m in client.search_registered_models())
    return found


def clean_import(record: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri = f"sqlite:///{tmp_path / 'clean' / 'mlflow.db'}"
    (tmp_path / "clean").mkdir()
    with monkeypatch.context() as patch:
        patch.setenv("ALLSEARCH_ARTIFACT_ROOT", str(tmp_path / "clean" / "artifacts"))
        study.import_record(str(record), tracking_uri=uri)
    return uri


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["SIGTERM", "SIGKILL"])
def test_an_interrupted_import_resumes_to_what_a_clean_import_writes(
        stop: str, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    space = tmp_path / "tiny.yaml"
    space.write_text(SPACE)
    record = tmp_path / "record"
    study.run(study_name="s", record=str(record), trials=3, space=str(space),
              data=str(tiny_data), progress=False, trials_per_process=0, trainer="standin:0")
    stopped = subprocess.run([sys.executable, "-c", STOPPED_IMPORT, str(record), stop],
                             capture_output=True, text=True, timeout=300, env=ENV, cwd=tmp_path)
    artifacts: dict[str, set[str]] = {}  # recorded trial run -> its artifacts' names
    for event in read_events(record):
        if event["op"] == "start_run":
            artifacts[event["run"]] = set()
        elif event["op"] in ("figure", "text", "dict") and event["run"] in artifacts:
            artifacts[event["run"]].add(event["name"])
    cut = [run for run, names in artifacts.items() if "learning_curves.png" in names][1]
    before = list(artifacts).index(cut)  # the trials imported whole before the one cut short
    client = MlflowClient(resolve_tracking_uri())
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    if stop == "SIGTERM":
        assert stopped.returncode == 130, stopped.stderr[-2000:]
        assert stopped.stderr.strip().splitlines()[-1].startswith("interrupted:")
        assert "Traceback" not in stopped.stderr
        assert [r.info.status for r in runs if r.info.status == "RUNNING"] == []
        trials = {r.data.tags[RECORDED_ID]: r for r in runs
                  if r.data.tags.get("allsearch.role") == "trial"}
        assert list(trials) == list(artifacts)[:before][::-1]  # newest first; no half trial
        for recorded, run in trials.items():
            assert {a.path for a in client.list_artifacts(run.info.run_id)} == artifacts[recorded]
    else:
        assert stopped.returncode == -signal.SIGKILL
        assert "RUNNING" in {r.info.status for r in runs}  # nothing could clean up
    [report] = study.import_record(str(record))
    assert (report.imported, report.skipped) == (len(artifacts) - before, before)
    assert snapshot(resolve_tracking_uri()) == snapshot(clean_import(record, tmp_path, monkeypatch))


@pytest.mark.train
def test_an_import_killed_after_a_model_resumes_to_what_a_clean_import_writes(
        tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    space = tmp_path / "tiny.yaml"
    space.write_text(SPACE.replace("batch_size: 8}", "batch_size: 8, features: hog_pca}")
                     .replace("params:\n", "params:\n  features: {type: categorical, choices: "
                              "[pixels, hog_pca]}\n"))
    record = tmp_path / "record"
    study.run(study_name="s", record=str(record), trials=2, space=str(space),
              data=str(tiny_data), progress=False, trials_per_process=0, log_models="all",
              precision="float32", pruner="none")
    assert list(record.glob("runs/*/model/feature_pipeline.npz"))
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_MODEL, str(record)],
                            capture_output=True, text=True, timeout=300, env=ENV, cwd=tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    [report] = study.import_record(str(record))
    assert (report.imported, report.skipped) == (2, 0)
    resumed = snapshot(resolve_tracking_uri())
    assert resumed == snapshot(clean_import(record, tmp_path, monkeypatch))
    assert resumed["models of s"] == 2 and resumed["versions"] == [("allsearch-s", 1)]


# ----------------------------------------------------------------------------- 6: run ids


@pytest.mark.parametrize(("run", "parent", "said"), [
    (PARENT, PARENT, f"run id '{PARENT}' is already used by the run started at EVENTS line 1"),
    (TRIAL, PARENT, f"run id '{TRIAL}' is already used by the run started at EVENTS line 2"),
    ("c" * 32, "c" * 32, f"run '{'c' * 32}' names itself as its parent"),
    ("c" * 32, TRIAL, f"parent run '{TRIAL}' is not a study of 's' started earlier"),
])
def test_a_run_id_that_collides_is_refused(run: str, parent: str, said: str, tmp_path: Path,
                                           capsys, isolated_store: Path) -> None:
    record = tmp_path / "record"
    events = small_record(record, line("start_run", run, 5, parent=parent, name="trial-0001",
                                       params={}, tags={}))
    message = refused(record, capsys, isolated_store)
    assert message.startswith(f"error: {events} line 5: {said.replace('EVENTS', str(events))}")
