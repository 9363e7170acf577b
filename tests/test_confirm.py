"""Confirmation on fresh seeds and splits, and the collapse tag."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from allsearch import confirm, study
from allsearch.core.space import HParams
from allsearch.data.dataset import load_dataset
from allsearch.engines import confirm as confirm_lib
from allsearch.tracking.store import resolve_tracking_uri
from allsearch.tracking.tracked import run_tracked
from allsearch.tracking.tracking import Tracker
from allsearch.training.standin import stand_in

SPACE = """
name: tiny
params:
  batch_size: {type: categorical, choices: [8, 16]}
  dense_units: {type: categorical, choices: [16, 32]}
fixed: {epochs: 2, conv_layers: 2, learning_rate: 0.002, dropout: 0.2}
baseline: {batch_size: 8, dense_units: 16}
"""


@pytest.fixture
def space_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(SPACE)
    return path


def runs_under(client: MlflowClient, parent_id: str) -> list:
    experiment = client.get_run(parent_id).info.experiment_id
    return client.search_runs([experiment],
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'")


@pytest.mark.train
def test_confirmation_trains_the_top_configurations_on_fresh_seeds_and_splits(
        tiny_data: Path, space_file: Path) -> None:
    study.run(trials=3, space=str(space_file), data=str(tiny_data), progress=False,
              pruner="none", retrain_duplicates=True)
    table = confirm_lib.confirm(study="tiny", top=2, seeds=2, progress=False)
    client = MlflowClient(resolve_tracking_uri())
    experiment = client.get_experiment_by_name("tiny").experiment_id
    parents = {r.data.tags["allsearch.study"]: r for r in client.search_runs(
        [experiment], filter_string="tags.`allsearch.role` = 'parent'")}
    confirmation, searched = parents["tiny-confirm"], parents["tiny"]
    assert confirmation.data.tags["allsearch.confirms"] == "tiny"
    assert searched.data.tags["confirmed_by"] == confirmation.info.run_id
    assert confirmation.info.status == "FINISHED"
    runs = runs_under(client, confirmation.info.run_id)
    assert len(runs) == 4 and {r.data.tags["state"] for r in runs} == {"COMPLETE"}
    # Fresh: the study trained seed 0 on split 42; the confirmation never does.
    pairs = {(r.data.params["seed"], r.data.params["split_seed"]) for r in runs}
    assert pairs == {("1000", "1042"), ("1001", "1043")}
    assert {r.data.params["data_fingerprint"] for r in runs}.isdisjoint(
        {r.data.params["data_fingerprint"] for r in runs_under(client, searched.info.run_id)})
    assert list(table["n"]) == [2, 2] and list(table["Search Rank"]) != []
    assert table["Confirmed Test"].is_monotonic_decreasing
    assert {"CI95 low", "CI95 high", "Confirmed Test SD", "Search Val"} <= set(table.columns)
    assert any(c.startswith("Recall ") for c in table.columns)
    assert "confirmed.csv" in {a.path for a in client.list_artifacts(confirmation.info.run_id)}

    # Resumable: a second run trains nothing new, a third seed only the missing pair.
    confirm_lib.confirm(study="tiny", top=2, seeds=2, progress=False)
    assert len(runs_under(client, confirmation.info.run_id)) == 4
    again = confirm_lib.confirm(study="tiny", top=2, seeds=3, progress=False)
    assert len(runs_under(client, confirmation.info.run_id)) == 6 and list(again["n"]) == [3, 3]


@pytest.mark.train
def test_a_recorded_study_is_confirmed_in_its_folder_and_imported_whole(
        tiny_data: Path, space_file: Path, tmp_path: Path) -> None:
    record = str(tmp_path / "record")
    study.run(trials=2, space=str(space_file), data=str(tiny_data), progress=False,
              pruner="none", record=record)
    table = confirm_lib.confirm(study="tiny", top=1, seeds=2, record=record, progress=False)
    assert list(table["n"]) == [2]
    reports = study.import_record(record)
    assert sorted((r.study, r.imported) for r in reports) == [("tiny", 2), ("tiny-confirm", 2)]


@pytest.mark.train
def test_a_study_split_by_blocks_is_confirmed_on_splits_by_blocks(tiny_data: Path,
                                                                  tmp_path: Path) -> None:
    """Confirm re-split the data at random whatever the study's split (leakage back in, and
    the runs logged split=random); now every fresh split is of the study's kind."""
    from allsearch.core.splits import SplitSettings

    space = tmp_path / "one-epoch.yaml"
    space.write_text(SPACE.replace("epochs: 2", "epochs: 1"))
    study.run(trials=2, space=str(space), data=str(tiny_data), progress=False, pruner="none",
              split="blocks", block_size=3, trainer="standin:0")  # the search trains nothing
    confirm_lib.confirm(study="tiny", top=1, seeds=1, progress=False)
    client = MlflowClient(resolve_tracking_uri())
    experiment = client.get_experiment_by_name("tiny").experiment_id
    [parent] = client.search_runs([experiment], filter_string="tags.`allsearch.confirms` = 'tiny'")
    [run] = runs_under(client, parent.info.run_id)
    params = run.data.params
    assert (params["split"], params["block_size"], params["embargo"]) == ("blocks", "3", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        blocks = load_dataset(tiny_data, split_seed=1042, split=SplitSettings("blocks", block_size=3))
    assert params["data_fingerprint"] == blocks.fingerprint


def test_the_confirm_command_names_a_missing_study(tmp_path: Path, capsys) -> None:
    assert confirm.main(["--study", "nothing"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "no study found" in err


class Collapsing:
    """A trainer whose network answers one class for every image."""

    def __call__(self, dataset, hparams, **kwargs):
        result = stand_in(0.0)(dataset, hparams, **kwargs)
        result.test_probabilities = np.tile(np.eye(dataset.n_classes, dtype=np.float32)[1],
                                            (len(dataset.y_test), 1))
        return result


def test_a_run_that_predicts_one_class_is_tagged_collapsed(tiny_data: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = load_dataset(tiny_data)
    tracker = Tracker("collapse")
    one = run_tracked(tracker, parent_id=None, name="one", dataset=dataset,
                      hparams=HParams(epochs=2), seeds=[0], params={}, trainer=Collapsing())
    fine = run_tracked(tracker, parent_id=None, name="fine", dataset=dataset,
                       hparams=HParams(epochs=2), seeds=[0], params={}, trainer=stand_in(0.0))
    assert one.collapsed and not fine.collapsed
    assert tracker.run_tags(one.run_id)["collapsed"] == "true"
    assert "collapsed" not in tracker.run_tags(fine.run_id)


@pytest.mark.train
@pytest.mark.slow
def test_confirmation_in_two_worker_processes_under_another_name(tiny_data: Path,
                                                                 space_file: Path) -> None:
    study.run(trials=2, space=str(space_file), data=str(tiny_data), progress=False,
              pruner="none", sampler="grid")  # two distinct configurations
    table = confirm_lib.confirm(study="tiny", top=2, seeds=2, workers=2, name="tiny-again",
                            progress=False)
    assert list(table["n"]) == [2, 2]
    client = MlflowClient(resolve_tracking_uri())
    experiment = client.get_experiment_by_name("tiny").experiment_id
    [parent] = client.search_runs([experiment],
                                  filter_string="tags.`allsearch.study` = 'tiny-again' and "
                                                "tags.`allsearch.role` = 'parent'")
    runs = runs_under(client, parent.info.run_id)
    assert len(runs) == 4 and len({r.data.tags["worker"] for r in runs}) == 2
