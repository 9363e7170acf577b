"""Replay a record folder into MLflow: `python -m allsearch.study import DIR`.

Every call a study made to its allsearch.tracking.recorder.Recorder is made again to an
allsearch.tracking.tracking.Tracker, so an imported run holds what a native run of the same trial holds
(params, metrics with their steps, tags, figures, texts, the model as the same pyfunc). The
study's summary (counts, best trial, champion, leaderboard) is then written on its parent run
as at the end of a native study.

A record folder comes from elsewhere: it is untrusted input (docs/guide.md, "What a record
and a store are trusted with"). The whole of it is checked first (allsearch.tracking.record_format:
every line, run id, artifact name and file), and a record that fails is refused in one line
before anything is written; the replay then reads its files through the same checks, never
unpickles anything and loads Keras models in Keras' safe mode.

Each imported run carries the tag allsearch.recorded_id. A trial run counts as imported once
it is ended: its params, metrics, every artifact and its model are replayed first, its end
state last. Importing the same folder again skips the runs that are, and replays a run an
interrupted import left running afresh (that one is deleted). An import that stops (Ctrl-C,
SIGTERM, an error) deletes the run it was replaying and ends its studies' parent runs KILLED
or FAILED, so it leaves no run RUNNING; the same command then resumes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from allsearch.core.config import StudyConfig
from allsearch.core.contract import MODEL_URI, RECORDED_ID, ROLE, STUDY
from allsearch.core.errors import (
    AllsearchError,
    ConfigError,
    StoreError,
    cannot_write,
    first_line,
    store_errors,
)
from allsearch.core.hardware import deferred_interrupts
from allsearch.engines import lifecycle
from allsearch.tracking.record_format import (
    MAX_ARTIFACT_BYTES,
    Event,
    Record,
    RunEvents,
    check_record,
    model_files,
    read_json_file,
    read_text_file,
    record_file,
)

__all__ = ["ImportReport", "import_record"]


@dataclass
class ImportReport:
    """What one import did, per study."""

    study: str
    experiment: str
    parent_id: str
    imported: int = 0
    skipped: int = 0

    def line(self) -> str:
        return (f"study '{self.study}': {self.imported} run(s) imported, {self.skipped} already "
                f"there; parent run {self.parent_id} in experiment '{self.experiment}'")


def import_record(folder: str | Path, *, tracking_uri: str | None = None) -> list[ImportReport]:
    """Replay every run recorded in `folder` into the MLflow store; see the module docstring."""
    folder = Path(folder)
    if not (folder / "runs").is_dir():
        raise ConfigError(f"'{folder}' is not a record folder (it has no runs/ folder); pass "
                          f"the folder a study wrote with --record DIR")
    try:
        record = check_record(folder)
    except ConfigError as exc:
        raise ConfigError(f"{exc}; nothing was imported (record the study again, or repair "
                          f"the record)") from None
    return _Import(record, tracking_uri).run()


class _MetricsOnce:
    """A Tracker whose log_metrics leaves out a value the run's history already holds at that
    step: replaying a study's parent run again, or writing its summary again, adds nothing."""

    def __init__(self, tracker: Any) -> None:
        self.tracker = tracker

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tracker, name)

    def log_metrics(self, run_id: str, metrics: dict[str, float], *, step: int = 0) -> None:
        new = {key: value for key, value in metrics.items()
               if not any(m.step == step and m.value == value
                          for m in self.tracker.client.get_metric_history(run_id, key))}
        if new:
            self.tracker.log_metrics(run_id, new, step=step)


class _Import:
    """One import of a checked record: parents first, then each trial run whole."""

    def __init__(self, record: Record, tracking_uri: str | None) -> None:
        self.record = record
        self.tracking_uri = tracking_uri
        self.trackers: dict[str, Any] = {}
        self.ids: dict[str, str] = {}  # recorded parent id -> MLflow run id
        self.uris: dict[str, str] = {}  # recorded model URI -> MLflow model URI
        self.reports: dict[str, ImportReport] = {}
        self.status: dict[str, str] = {}  # recorded parent id -> its last recorded status
        self.cut_off: dict[str, list[str]] = {}  # recorded parent id -> trials without an end
        self.unfinished: dict[str, Any] = {}  # MLflow id of a trial not ended yet -> tracker
        self.parents: list[tuple[Any, str]] = []  # (tracker, MLflow id) of the parents opened
        self.where = str(record.folder)  # the line being replayed, for an error's message

    def tracker(self, experiment: str) -> Any:
        from allsearch.tracking.tracking import Tracker

        if experiment not in self.trackers:
            self.trackers[experiment] = Tracker(experiment, tracking_uri=self.tracking_uri)
        return self.trackers[experiment]

    def run(self) -> list[ImportReport]:
        try:
            for run in self.record.runs:
                (self.parent if run.is_parent else self.trial)(run)
            for recorded, report in self.reports.items():
                self.finish(recorded, report)
        except BaseException as exc:
            with deferred_interrupts():
                self.abandon("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            if isinstance(exc, store_errors()):
                location = next(iter(self.trackers.values())).location if self.trackers else (
                    "MLflow store")
                raise StoreError(cannot_write(location, exc)) from None
            if isinstance(exc, Exception) and not isinstance(exc, AllsearchError):
                # What the tracking and model code raise on what no study records (a model
                # that loads in safe mode but does not fit the pyfunc, ...): one line.
                raise ConfigError(
                    f"{self.where}: this line cannot be replayed ({type(exc).__name__}: "
                    f"{first_line(exc)[:160]}); nothing after it was imported; record the "
                    f"study again") from exc
            raise
        return list(self.reports.values())

    def parent(self, run: RunEvents) -> None:
        start, self.where = run.events[0].data, run.events[0].where
        tracker = self.tracker(run.experiment)
        name = start["name"]
        extra = {k: v for k, v in start["tags"].items() if k not in (ROLE, STUDY)}
        with deferred_interrupts():
            found = tracker.find_parent(name)
            if found is None:
                found = tracker.start_parent(name, start["params"],
                                             tags={**extra, RECORDED_ID: run.run_id})
            else:
                tracker.resume_parent(found, start["params"])
            self.parents.append((tracker, found))
        self.ids[run.run_id] = found
        self.reports[run.run_id] = ImportReport(name, run.experiment, found)
        self.status[run.run_id] = "RUNNING"
        once = _MetricsOnce(tracker)
        for event in run.events[1:]:
            if event.op in ("end", "resume_parent"):  # the parent ends after its summary
                self.status[run.run_id] = event.data.get("status", "RUNNING")
            if event.op != "end":
                with deferred_interrupts():
                    self.replay(once, found, event)

    def trial(self, run: RunEvents) -> None:
        start, self.where = run.events[0].data, run.events[0].where
        tracker = self.tracker(run.experiment)
        report = self.reports.get(run.parent or "")
        parent_id = self.ids.get(run.parent or "")
        query = f"tags.`{RECORDED_ID}` = '{run.run_id}'"  # ids are checked: no quote in them
        if parent_id is not None:
            query += f" and tags.`mlflow.parentRunId` = '{parent_id}'"
        found = tracker.client.search_runs([tracker.experiment_id], filter_string=query)
        done = next((r for r in found if r.info.status != "RUNNING"), None)
        if done is not None:
            for event in run.events:
                if event.op == "model" and MODEL_URI in done.data.tags:
                    self.uris[event.data["uri"]] = done.data.tags[MODEL_URI]
            if report is not None:
                report.skipped += 1
            return
        with deferred_interrupts():
            for left in found:  # an interrupted import's run: replayed afresh
                _delete_run(tracker, left.info.run_id)
            run_id = tracker.start_run(parent_id=parent_id, name=start["name"], params=start["params"],
                                       tags={**start["tags"], RECORDED_ID: run.run_id})
            self.unfinished[run_id] = tracker
        ends = [e.data["status"] for e in run.events if e.op == "end"]
        for event in run.events[1:]:
            if event.op != "end":  # the end state goes last, after every artifact
                with deferred_interrupts():
                    self.replay(tracker, run_id, event)
        with deferred_interrupts():
            if ends or run.parent is None:
                tracker.end_run(run_id, ends[-1] if ends else "KILLED")
                del self.unfinished[run_id]
            else:  # the record stops while it runs: its study's summary marks it KILLED
                self.cut_off.setdefault(run.parent, []).append(run_id)
        if report is not None:
            report.imported += 1

    def replay(self, store: Any, run_id: str, event: Event) -> None:
        op, data, where = event.op, event.data, event.where
        self.where = where
        files = self.record.folder / "runs" / event.run
        if op == "resume_parent":
            store.resume_parent(run_id, data["params"])
        elif op == "params":
            store.log_params(run_id, data["params"])
        elif op == "metrics":
            store.log_metrics(run_id, data["metrics"], step=data["step"])
        elif op == "tags":
            store.set_tags(run_id, {k: self.uris.get(v, v) if isinstance(v, str) else v
                                    for k, v in data["tags"].items()})
        elif op == "figure":
            store.log_image_file(run_id, record_file(self.record.folder, files / data["name"],
                                                     where, limit=MAX_ARTIFACT_BYTES),
                                 data["name"])
        elif op == "text":
            path = record_file(self.record.folder, files / data["name"], where)
            store.log_text(run_id, read_text_file(path, where), data["name"])
        elif op == "dict":
            path = record_file(self.record.folder, files / data["name"], where)
            store.log_dict(run_id, read_json_file(path, where), data["name"])
        elif op == "model":
            self.uris[data["uri"]] = _log_model(store, run_id, self.record.folder, event)

    def finish(self, recorded: str, report: ImportReport) -> None:
        tracker = self.trackers[report.experiment]
        # A study whose record ends while running was cut off.
        final = self.status[recorded] if self.status[recorded] != "RUNNING" else "KILLED"
        cut_off = self.cut_off.get(recorded, [])
        said: tuple[type[BaseException], ...] = (AllsearchError, *store_errors())
        with deferred_interrupts():
            try:
                lifecycle.finish(_MetricsOnce(tracker), report.parent_id,
                                 StudyConfig(study_name=report.study), final, dead_runs=cut_off)
            except said:
                raise
            except Exception as exc:  # the summary's code meets what no study records
                raise ConfigError(
                    f"the runs of study '{report.study}' in {self.record.folder} are not what a "
                    f"study records ({type(exc).__name__}: {first_line(exc)[:160]}); its summary "
                    f"cannot be written; record the study again") from exc
            for run_id in cut_off:
                self.unfinished.pop(run_id, None)

    def abandon(self, status: str) -> None:
        """After an error or an interrupt: the trial runs not ended are deleted (the next
        import replays them whole), the parents opened are ended with `status`."""
        errors = store_errors()
        for run_id, tracker in self.unfinished.items():
            try:
                if tracker.run_status(run_id) == "RUNNING":
                    _delete_run(tracker, run_id)
            except errors:
                continue
        for tracker, parent_id in self.parents:
            try:
                if tracker.run_status(parent_id) == "RUNNING":
                    tracker.end_run(parent_id, status)
            except errors:
                continue


def _delete_run(tracker: Any, run_id: str) -> None:
    """Delete a run (MLflow keeps it, deleted, until `mlflow gc`) and the models it logged."""
    for model in tracker.client.search_logged_models(
            [tracker.experiment_id], filter_string=f"source_run_id = '{run_id}'"):
        tracker.client.delete_logged_model(model.model_id)
    tracker.client.delete_run(run_id)


def _log_model(tracker: Any, run_id: str, root: Path, event: Event) -> str:
    """The recorded model as the pyfunc a native run logs: the Keras file loaded in safe mode
    (no Lambda layer's code, no unknown class), the HOG/PCA pipeline rebuilt from numbers."""
    from allsearch.core.hardware import start_tensorflow
    from allsearch.data.features import load_pipeline

    files = model_files(root, event.run, event.data["uri"], event.where)
    pipeline = load_pipeline(files.pipeline) if files.pipeline is not None else None
    start_tensorflow()
    import keras

    try:
        network = keras.saving.load_model(files.network, compile=False, safe_mode=True)
    except Exception as exc:  # noqa: BLE001  (anything a damaged or crafted file raises)
        raise ConfigError(f"{event.where}: the model '{files.network}' cannot be loaded in "
                          f"Keras' safe mode ({first_line(exc)[:200]}); record the study "
                          f"again") from None
    return tracker.log_model(run_id, network=network, class_names=files.class_names,
                             hparams=files.hparams, pipeline=pipeline)
