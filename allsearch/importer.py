"""Replay a record folder into MLflow: `python -m allsearch.study import DIR`.

Every call a study made to its allsearch.recorder.Recorder is made again, in order, to an
allsearch.tracking.Tracker, so an imported run holds what a native run of the same trial holds
(params, metrics with their steps, tags, figures, texts, the model as the same pyfunc). Each
imported run carries the tag allsearch.recorded_id: importing the same folder again skips the
runs already there. The study's summary (counts, best trial, champion, leaderboard) is then
written on its parent run as at the end of a native study.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from allsearch import lifecycle
from allsearch.config import StudyConfig
from allsearch.contract import RECORDED_ID, ROLE, STUDY
from allsearch.errors import ConfigError
from allsearch.recorder import MODEL_META, NETWORK_FILE, PIPELINE_FILE, read_events, read_runs

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
    from allsearch.tracking import Tracker

    folder = Path(folder)
    if not (folder / "runs").is_dir():
        raise ConfigError(f"'{folder}' is not a record folder (it has no runs/ folder); pass "
                          f"the folder a study wrote with --record DIR")
    trackers: dict[str, Any] = {}
    ids: dict[str, str | None] = {}  # recorded run id -> MLflow run id (None: already imported)
    uris: dict[str, str] = {}  # recorded model URI -> MLflow model URI
    reports: dict[str, ImportReport] = {}
    status: dict[str, str] = {}  # recorded parent id -> its last recorded status
    for event in read_events(folder):
        experiment, op, recorded = event["experiment"], event["op"], event["run"]
        if experiment not in trackers:
            trackers[experiment] = Tracker(experiment, tracking_uri=tracking_uri)
        tracker = trackers[experiment]
        if op == "start_parent":
            name = event["name"]
            extra = {k: v for k, v in event["tags"].items() if k not in (ROLE, STUDY)}
            found = tracker.find_parent(name)
            if found is None:
                ids[recorded] = tracker.start_parent(name, event["params"],
                                                     tags={**extra, RECORDED_ID: recorded})
            else:
                ids[recorded] = found
                tracker.resume_parent(found, event["params"])
            reports[recorded] = ImportReport(name, experiment, str(ids[recorded]))
            status[recorded] = "RUNNING"
        elif op == "start_run":
            parent = ids.get(event["parent"]) if event.get("parent") else None
            report = reports.get(event.get("parent") or "")
            if parent is not None and tracker.find_run(parent, {RECORDED_ID: recorded}):
                ids[recorded] = None
                if report is not None:
                    report.skipped += 1
                continue
            ids[recorded] = tracker.start_run(parent_id=parent, name=event["name"],
                                              params=event["params"],
                                              tags={**event["tags"], RECORDED_ID: recorded})
            if report is not None:
                report.imported += 1
        elif ids.get(recorded) is not None:
            if op == "end" and recorded in status:
                status[recorded] = event["status"]  # the parent ends after its summary
                continue
            _replay(tracker, str(ids[recorded]), event, folder / "runs" / recorded, uris)
    recorded_runs = read_runs(folder)
    for recorded, report in reports.items():
        tracker = trackers[report.experiment]
        # A study, or a trial, whose record ends while running was cut off.
        final = status[recorded] if status[recorded] != "RUNNING" else "KILLED"
        cut_off = [str(ids[r.run_id]) for r in recorded_runs.values()
                   if r.parent == recorded and r.status == "RUNNING" and ids.get(r.run_id)]
        lifecycle.finish(tracker, report.parent_id, StudyConfig(study_name=report.study), final,
                         dead_runs=cut_off)
    return list(reports.values())


def _replay(tracker: Any, run_id: str, event: dict[str, Any], artifacts: Path,
            uris: dict[str, str]) -> None:
    op = event["op"]
    if op == "resume_parent":
        tracker.resume_parent(run_id, event["params"])
    elif op == "params":
        tracker.log_params(run_id, event["params"])
    elif op == "metrics":
        tracker.log_metrics(run_id, event["metrics"], step=event["step"])
    elif op == "tags":
        tracker.set_tags(run_id, {k: uris.get(v, v) if isinstance(v, str) else v
                                  for k, v in event["tags"].items()})
    elif op == "figure":
        tracker.log_image_file(run_id, artifacts / event["name"], event["name"])
    elif op == "text":
        tracker.log_text(run_id, (artifacts / event["name"]).read_text(encoding="utf-8"),
                         event["name"])
    elif op == "dict":
        tracker.log_dict(run_id, json.loads((artifacts / event["name"]).read_text(encoding="utf-8")),
                         event["name"])
    elif op == "model":
        uris[event["uri"]] = _log_model(tracker, run_id, artifacts / "model")
    elif op == "end":
        tracker.end_run(run_id, event["status"])


def _log_model(tracker: Any, run_id: str, folder: Path) -> str:
    import joblib

    from allsearch.hardware import start_tensorflow

    start_tensorflow()
    import keras

    meta = json.loads((folder / MODEL_META).read_text())
    pipeline = joblib.load(folder / PIPELINE_FILE) if (folder / PIPELINE_FILE).is_file() else None
    network = keras.saving.load_model(folder / NETWORK_FILE, compile=False)
    return tracker.log_model(run_id, network=network, class_names=tuple(meta["class_names"]),
                             hparams=meta["hparams"], pipeline=pipeline)
