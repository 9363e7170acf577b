"""Leaderboard export (every format) and the Table 1 reproduction on synthetic data."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest

from allsearch import leaderboard
from allsearch.core.contract import MODEL_URI
from allsearch.core.space import HParams, load_space
from allsearch.engines import table1 as table1_lib
from allsearch.readers import leaderboard as leaderboard_lib
from allsearch.readers.leaderboard import METRIC_COLUMNS, render, runs_to_table
from allsearch.tracking.tracked import start_trial
from allsearch.tracking.tracking import Tracker

PAPER_ORDER = ["Validation Accuracy", "Validation Prediction Time (s)", "Test Accuracy",
               "Test Prediction Time (s)"]


def fake_run(tracker: Tracker, parent: str, number: int, hp: dict, val: float, test: float,
             state: str = "COMPLETE", seed: int = 0, recalls: dict | None = None,
             epochs_run: int = 15, model: bool = False) -> str:
    """A trial run with final metrics, ended in `state` ("RUNNING": left running); its id."""
    run = start_trial(tracker, parent_id=parent, name=f"trial-{number}",
                              params={"epochs": 15, "batch_size": 64, "loss": "categorical_crossentropy",
                                      "conv_layers": 3, "learning_rate": 0.001, "dropout": 0.5,
                                      "dense_units": 128, "features": "pixels", **hp,
                                      "trial_number": number, "seed": seed, "variant": "tiny"})
    tracker.log_metrics(run.run_id, {"val_accuracy": val, "test_accuracy": test,
                                     "val_prediction_time_s": 1.5, "test_prediction_time_s": 1.4,
                                     "latency_ms_p50": 3.0, "epochs_run": epochs_run,
                                     **{f"test_recall_{c}": r for c, r in (recalls or {}).items()}})
    if model:
        tracker.set_tags(run.run_id, {MODEL_URI: f"models:/m-{run.run_id}"})
    if state != "RUNNING":
        run.end(state)
    return run.run_id


@pytest.fixture
def study_runs() -> tuple[Tracker, str]:
    tracker = Tracker("lb")
    parent = tracker.start_parent("lb", {"space": "paper"})
    fake_run(tracker, parent, 0, {}, 0.80, 0.82)
    fake_run(tracker, parent, 1, {"batch_size": 32}, 0.86, 0.84)
    fake_run(tracker, parent, 9, {"batch_size": 32}, 0.86, 0.84)  # proposed again, same seed: a copy
    fake_run(tracker, parent, 2, {"batch_size": 16}, 0.50, 0.40, state="PRUNED")
    # One configuration over three seeds: one row, mean ± sd.
    for seed, (v, t) in enumerate([(0.70, 0.72), (0.74, 0.76), (0.78, 0.80)]):
        fake_run(tracker, parent, 3 + seed, {"epochs": 10}, v, t, seed=seed)
    tracker.end_run(parent)
    return tracker, parent


def test_rows_order_and_grouping(study_runs) -> None:
    tracker, parent = study_runs
    table = leaderboard_lib.study_table(tracker, parent)
    assert len(table) == 4  # 2 single trials + 1 repeated configuration + 1 pruned
    columns = list(table.columns)
    assert columns[:4] == ["epochs", "batch_size", "loss", "conv_layers"]
    titles = [c for c in columns if c in PAPER_ORDER]
    assert titles == PAPER_ORDER
    assert columns.index("Latency p50 (ms)") > columns.index("Test Prediction Time (s)")
    assert list(table["Validation Accuracy"][:3]) == pytest.approx([0.86, 0.80, 0.74])
    assert table["State"].iloc[-1] == "PRUNED"
    repeated = table[table["epochs"] == 10].iloc[0]
    assert repeated["n"] == 3
    assert repeated["Validation Accuracy SD"] == pytest.approx(0.04)
    assert table.iloc[0]["n"] == 1 and table.iloc[0]["Trial"] == "1,9"
    assert table.iloc[0]["Δ Val vs paper"] == pytest.approx(0.06)
    assert table.iloc[0]["Δ Test vs paper"] == pytest.approx(0.02)


def test_every_format(study_runs) -> None:
    tracker, parent = study_runs
    table = leaderboard_lib.study_table(tracker, parent)
    parsed = pd.read_csv(io.StringIO(render(table, "csv")))
    assert list(parsed.columns) == list(table.columns)
    assert parsed["Validation Accuracy"].iloc[0] == pytest.approx(0.86)
    records = json.loads(render(table, "json"))
    assert len(records) == 4 and records[0]["Test Accuracy"] == pytest.approx(0.84)
    markdown = render(table, "markdown")
    header = markdown.splitlines()[0]
    assert header.startswith("| epochs | batch_size | loss | conv_layers | Split | "
                             "Validation Accuracy |")
    assert "Validation Accuracy SD" not in header
    assert "0.740 ± 0.040" in markdown and "+0.060" in markdown
    assert "<table" in render(table, "html") and "0.740 ± 0.040" in render(table, "html")
    assert r"\begin{tabular}" in render(table, "latex") and r"$\pm$" in render(table, "latex")


def test_cli_latest_study_top_and_out(study_runs, tmp_path: Path, capsys) -> None:
    out = tmp_path / "lb.csv"
    assert leaderboard.main(["--format", "csv", "--top", "2", "--out", str(out)]) == 0
    parsed = pd.read_csv(out)
    assert len(parsed) == 2
    assert leaderboard.main(["--study", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no study named 'nope'" in err and "known studies: lb" in err


def test_cli_without_any_study(capsys) -> None:
    assert leaderboard.main([]) == 2
    assert "no study found" in capsys.readouterr().err
    assert not Path("mlruns/mlflow.db").exists()  # reading creates no store


RESULT_COLUMNS = ["Validation Accuracy", "Validation Accuracy SD", "Validation Prediction Time (s)",
                  "Test Accuracy", "Test Accuracy SD", "Test Prediction Time (s)",
                  "Latency p50 (ms)", "Recall Benign", "Recall Benign SD",
                  "Δ Val vs paper", "Δ Test vs paper"]


def test_unfinished_trials_show_no_result_and_rows_link_the_model() -> None:
    """A killed, failed, pruned or running trial's partial numbers are not a result; the row
    of a configuration that ran more than once links the run that holds the model."""
    tracker = Tracker("partial")
    parent = tracker.start_parent("partial", {"space": "paper"})
    copy_first = fake_run(tracker, parent, 0, {"batch_size": 32}, 0.86, 0.84)
    with_model = fake_run(tracker, parent, 5, {"batch_size": 32}, 0.86, 0.84, model=True)
    plain_first = fake_run(tracker, parent, 1, {"batch_size": 8}, 0.70, 0.70)
    fake_run(tracker, parent, 6, {"batch_size": 8}, 0.70, 0.70)  # a copy, neither has a model
    unfinished = {state: fake_run(tracker, parent, 10 + i, {"epochs": 20 + i}, 0.99, 0.98,
                                  state=state, epochs_run=3 + i, recalls={"Benign": 1.0})
                  for i, state in enumerate(["KILLED", "FAIL", "PRUNED", "RUNNING"])}
    table = leaderboard_lib.study_table(tracker, parent)
    assert len(table) == 6
    assert list(table["State"][:2]) == ["COMPLETE", "COMPLETE"]
    assert table.iloc[0]["Run ID"] == with_model != copy_first  # the model's run, not the copy's
    assert table.iloc[0]["Trial"] == "0,5"
    assert table.iloc[1]["Run ID"] == plain_first  # no model anywhere: the first run
    assert table.iloc[0]["Validation Accuracy"] == pytest.approx(0.86)
    for i, (state, run_id) in enumerate(unfinished.items()):
        row = table[table["State"] == state].iloc[0]
        assert row["Run ID"] == run_id and row["Trial"] == str(10 + i)
        assert row["Epochs Run"] == 3 + i
        shown = {c: row[c] for c in RESULT_COLUMNS if not pd.isna(row[c])}
        assert shown == {}, f"a {state} trial shows {shown}"
    markdown = render(table, "markdown")
    assert "0.990" not in markdown and "+0.190" not in markdown
    best = leaderboard_lib.best_configuration(tracker.runs_frame(f"tags.`mlflow.parentRunId` = '{parent}'"))
    assert best[1]["Run ID"] == with_model


def test_metric_columns_match_the_design_names() -> None:
    assert [m for m, _ in METRIC_COLUMNS][:4] == ["val_accuracy", "val_prediction_time_s",
                                                  "test_accuracy", "test_prediction_time_s"]
    assert runs_to_table(pd.DataFrame()).empty


TABLE = """
fixed: {conv_layers: 5, learning_rate: 0.001, dropout: 0.5, dense_units: 32, features: pixels}
configurations:
  - hparams: {epochs: 1, batch_size: 16, loss: categorical_crossentropy}
    paper: {val_accuracy: 0.80, test_accuracy: 0.82, test_prediction_time_s: 1.98}
  - hparams: {epochs: 1, batch_size: 16, loss: binary_crossentropy}
    paper: {val_accuracy: 0.76, test_accuracy: 0.78}
"""


@pytest.mark.train
def test_table1_runs_seeds_resumes_and_reports(tiny_data: Path, tmp_path: Path) -> None:
    table_file = tmp_path / "t1.yaml"
    table_file.write_text(TABLE)
    result = table1_lib.run(data=str(tiny_data), seeds=2, table_file=table_file, progress=False,
                        precision="float32")
    assert list(result["n"]) == [2, 2]
    assert list(result["Variant"]) == ["tiny", "tiny"]
    row = result.iloc[0]
    assert row["Test Accuracy CI95 low"] <= row["Test Accuracy"] <= row["Test Accuracy CI95 high"]
    assert row["Paper Test Accuracy"] == 0.82
    text = table1_lib.render(result)
    assert "| Configuration | Variant | n | Val Acc (ours) |" in text and "±" in text

    tracker = Tracker("table1")
    parent = tracker.find_parent("table1-tiny-float32")
    runs = tracker.runs_frame(f"tags.`mlflow.parentRunId` = '{parent}'")
    assert len(runs) == 4 and set(runs["params.engine"]) == {"table1"}
    assert set(runs["params.precision"]) == {"float32"}
    assert sorted(runs["params.split_seed"].astype(int)) == [42, 42, 43, 43]
    # Running again trains nothing new.
    table1_lib.run(data=str(tiny_data), seeds=2, table_file=table_file, progress=False,
               precision="float32")
    assert len(tracker.runs_frame(f"tags.`mlflow.parentRunId` = '{parent}'")) == 4
    artifacts = {a.path for a in tracker.client.list_artifacts(parent)}
    assert {"table1.md", "table1.csv"} <= artifacts


def test_per_class_recall_columns_mean_and_sd(tmp_path: Path) -> None:
    tracker = Tracker("recall")
    parent = tracker.start_parent("recall", {"space": "paper"})
    for seed, benign in enumerate([0.6, 0.8]):
        fake_run(tracker, parent, seed, {}, 0.8, 0.8, seed=seed, recalls={"Benign": benign, "Pro": 1.0})
    tracker.end_run(parent)
    table = leaderboard_lib.study_table(tracker, parent)
    columns = list(table.columns)
    assert columns.index("Recall Benign") > columns.index("Epochs Run")
    assert table["Recall Benign"].iloc[0] == pytest.approx(0.7)
    assert table["Recall Benign SD"].iloc[0] == pytest.approx(0.1414, abs=1e-4)
    assert "0.700 ± 0.141" in render(table, "markdown")
    assert "Recall Pro SD" in pd.read_csv(io.StringIO(render(table, "csv"))).columns


def test_save_space_writes_the_best_configuration_as_a_fixed_space(tmp_path: Path, capsys) -> None:
    tracker = Tracker("widey")
    parent = tracker.start_parent("widey", {"space": "wide"})
    wide = {"learning_rate": 0.00042, "batch_norm": True, "filter_multiplier": 1.5,
            "pooling": "gap", "augment": True, "features": "both", "class_weights": "balanced"}
    fake_run(tracker, parent, 0, {}, 0.70, 0.71)
    fake_run(tracker, parent, 1, {**wide, "epochs": 27, "batch_size": 32}, 0.93, 0.91)
    fake_run(tracker, parent, 2, {"epochs": 40}, 0.99, 0.99, state="PRUNED")  # not complete: never chosen
    tracker.end_run(parent)
    out = tmp_path / "best.yaml"
    assert leaderboard.main(["--study", "widey", "--save-space", str(out), "--top", "1"]) == 0
    assert "trial 1 (validation 0.930) written to" in capsys.readouterr().err
    markdown = leaderboard_lib.render(leaderboard_lib.study_table(tracker, parent), "markdown")
    assert "| 0.00042 |" in markdown and "| 0.001 |" in markdown  # hyperparameters as set
    space = load_space(out)
    assert space.params == () and space.name == "best"
    assert space.hparams({}) == HParams(epochs=27, batch_size=32, **wide)
    assert "study 'widey'" in out.read_text() and "run " in out.read_text()


def test_save_space_needs_a_complete_trial(tmp_path: Path, capsys) -> None:
    tracker = Tracker("nothing")
    parent = tracker.start_parent("nothing", {"space": "paper"})
    fake_run(tracker, parent, 0, {}, 0.5, 0.5, state="PRUNED")
    tracker.end_run(parent)
    assert leaderboard.main(["--save-space", str(tmp_path / "b.yaml")]) == 2
    assert "no complete trial" in capsys.readouterr().err
    assert not (tmp_path / "b.yaml").exists()


def test_where_keeps_matching_trials_and_names_a_bad_condition(tmp_path: Path, capsys) -> None:
    tracker = Tracker("modes")
    parent = tracker.start_parent("modes", {"space": "wide"})
    fake_run(tracker, parent, 0, {"features": "pixels", "batch_norm": False}, 0.90, 0.90)
    fake_run(tracker, parent, 1, {"features": "hog_pca", "batch_norm": True}, 0.70, 0.71)
    fake_run(tracker, parent, 2, {"features": "hog_pca", "batch_norm": False}, 0.60, 0.61)
    tracker.end_run(parent)
    out = tmp_path / "best-hog.yaml"
    assert leaderboard.main(["--where", "features=hog_pca", "--format", "csv",
                             "--save-space", str(out)]) == 0
    parsed = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(parsed["Validation Accuracy"]) == pytest.approx([0.70, 0.60])
    assert load_space(out).hparams({}).features == "hog_pca"
    assert leaderboard.main(["--where", "features=hog_pca", "--where", "batch_norm=true",
                             "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1
    assert leaderboard.main(["--where", "colour=red"]) == 2
    assert "--where 'colour=red': expected NAME=VALUE" in capsys.readouterr().err
    assert leaderboard.main(["--where", "features=both"]) == 2
    assert "no trial of study 'modes' has features=both" in capsys.readouterr().err


def test_confirmed_figures_sit_beside_the_search_and_rank_the_table(tmp_path: Path,
                                                                    capsys) -> None:
    tracker = Tracker("conf")
    parent = tracker.start_parent("conf", {"space": "paper"})
    fake_run(tracker, parent, 0, {}, 0.90, 0.88)                      # best in the search
    fake_run(tracker, parent, 1, {"batch_size": 32}, 0.85, 0.84)
    fake_run(tracker, parent, 2, {"batch_size": 16}, 0.80, 0.80)      # never confirmed
    confirmation = tracker.start_parent("conf-confirm", {"confirms": "conf"})
    for i, test in enumerate((0.80, 0.84, 0.82)):                     # the winner's curse
        fake_run(tracker, confirmation, 0, {}, 0.8, test, seed=1000 + i)
    for i, test in enumerate((0.86, 0.85, 0.87)):
        fake_run(tracker, confirmation, 1, {"batch_size": 32}, 0.8, test, seed=1000 + i)
    assert leaderboard.main(["--study", "conf", "--format", "csv"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(table["batch_size"]) == [32, 64, 16]  # ranked by the confirmed mean
    assert list(table["Confirmed n"]) == [3, 3, 0]
    assert table["Confirmed Test"].iloc[0] == pytest.approx(0.86)
    assert table["Confirmed 95% CI"].iloc[0].startswith("[0.8")
    assert table["Validation Accuracy"].iloc[1] == pytest.approx(0.90)  # the search value kept


def test_collapsed_runs_are_marked(capsys) -> None:
    tracker = Tracker("flat")
    parent = tracker.start_parent("flat", {"space": "paper"})
    one = fake_run(tracker, parent, 0, {}, 0.31, 0.30)
    tracker.set_tags(one, {"collapsed": "true"})
    fake_run(tracker, parent, 1, {"batch_size": 32}, 0.85, 0.84)
    table = runs_to_table(tracker.runs_frame(f"tags.`mlflow.parentRunId` = '{parent}'"))
    assert dict(zip(table["batch_size"], table["Collapsed"], strict=True)) == {32: 0, 64: 1}


def test_counts_are_shown_whole_and_accuracies_to_three_places() -> None:
    table = pd.DataFrame({"Parameters": [323812.0, 1728932.0], "Test Accuracy": [0.96066, 0.5],
                          "Epochs Run": [16.0, 15.0]})
    shown = render(table)
    assert "| 323812 | 0.961 | 16.0 |" in shown and "| 1728932 | 0.500 | 15.0 |" in shown
    assert "323812.000" not in shown


def test_of_configurations_equally_good_the_earliest_ranks_first() -> None:
    """Ties on validation accuracy go to the earliest trial (the one Optuna calls best and
    registers as champion) in the table and in what confirm picks, whatever order MLflow
    returns the runs in (newest first)."""
    from allsearch.engines.confirm import candidates

    tracker = Tracker("ties")
    parent = tracker.start_parent("ties", {"space": "paper"})
    for number, batch in enumerate((64, 32, 16, 8)):
        fake_run(tracker, parent, number, {"batch_size": batch}, 0.9, 0.9 - number / 100)
    tracker.end_run(parent)
    runs = tracker.runs_frame(f"tags.`mlflow.parentRunId` = '{parent}'")
    assert list(runs["params.trial_number"]) == ["3", "2", "1", "0"]  # newest first
    table = runs_to_table(runs)
    assert list(table["Trial"]) == ["0", "1", "2", "3"]
    assert [c.trial for c in candidates(runs, 2)] == ["0", "1"]
