"""The leaderboard names the split of every figure and never mixes two splits in one mean:
rows of the search by split, confirmed columns per split."""

from __future__ import annotations

import pytest

from allsearch import leaderboard
from allsearch.core.contract import CONFIRMS
from allsearch.readers.confirmed import confirmation_runs, with_confirmation
from allsearch.readers.leaderboard import runs_to_table
from allsearch.tracking.tracked import start_trial
from allsearch.tracking.tracking import Tracker

RANDOM = {"split": "random"}
BLOCKS = {"split": "blocks", "block_size": 50, "embargo": 5}


def fake_run(tracker: Tracker, parent: str, number: int, split: dict | None, test: float,
             seed: int, batch_size: int = 64) -> str:
    run = start_trial(tracker, parent_id=parent, name=f"trial-{number}",
                      params={"epochs": 15, "batch_size": batch_size, "conv_layers": 3,
                              "loss": "categorical_crossentropy", "trial_number": number,
                              "seed": seed, "variant": "tiny", **(split or {})})
    tracker.log_metrics(run.run_id, {"val_accuracy": test, "test_accuracy": test,
                                     "epochs_run": 15})
    run.end("COMPLETE")
    return run.run_id


def frame(tracker: Tracker, parent: str):
    return tracker.runs_frame(f"tags.`mlflow.parentRunId` = '{parent}'")


def test_runs_of_two_splits_are_two_rows_each_named() -> None:
    tracker = Tracker("mixed")
    parent = tracker.start_parent("mixed", {})
    for seed, test in enumerate((0.90, 0.92)):
        fake_run(tracker, parent, seed, RANDOM, test, seed)
    for seed, test in enumerate((0.60, 0.64)):
        fake_run(tracker, parent, 10 + seed, BLOCKS, test, seed)
    fake_run(tracker, parent, 20, None, 0.80, 7, batch_size=32)  # logged before splits: random
    table = runs_to_table(frame(tracker, parent)).set_index(["batch_size", "Split"])
    assert table.loc[(64, "random"), "Test Accuracy"] == pytest.approx(0.91)
    assert table.loc[(64, "blocks 50, embargo 5"), "Test Accuracy"] == pytest.approx(0.62)
    assert table.loc[(64, "random"), "n"] == 2 and table.loc[(64, "blocks 50, embargo 5"), "n"] == 2
    assert table.loc[(32, "random"), "n"] == 1
    assert len(table) == 3


def test_confirmations_under_two_splits_sit_side_by_side_unmixed(capsys) -> None:
    tracker = Tracker("conf")
    parent = tracker.start_parent("conf", {})
    fake_run(tracker, parent, 0, RANDOM, 0.90, 0, batch_size=64)
    fake_run(tracker, parent, 1, RANDOM, 0.85, 0, batch_size=32)
    same = tracker.start_parent("conf-confirm", {"confirms": "conf", **RANDOM})
    tracker.set_tags(same, {CONFIRMS: "conf"})
    other = tracker.start_parent("conf-confirm-blocks", {"confirms": "conf", **BLOCKS})
    tracker.set_tags(other, {CONFIRMS: "conf"})
    for i, test in enumerate((0.88, 0.86, 0.87)):
        fake_run(tracker, same, 0, RANDOM, test, 1000 + i, batch_size=64)
    for i, test in enumerate((0.60, 0.66)):
        fake_run(tracker, other, 0, BLOCKS, test, 1000 + i, batch_size=64)
    fake_run(tracker, other, 1, BLOCKS, 0.70, 1000, batch_size=32)
    confirmed = confirmation_runs("conf")
    assert len(confirmed) == 6
    table = with_confirmation(runs_to_table(frame(tracker, parent)), frame(tracker, parent),
                              confirmed).set_index("batch_size")
    # The study's own split keeps the plain columns; the other split's are named by it.
    assert table.loc[64, "Confirmed Test"] == pytest.approx(0.87)
    assert table.loc[64, "Confirmed n"] == 3 and table.loc[32, "Confirmed n"] == 0
    blocks = " (blocks 50, embargo 5)"
    assert table.loc[64, "Confirmed Test" + blocks] == pytest.approx(0.63)
    assert table.loc[64, "Confirmed n" + blocks] == 2
    assert table.loc[32, "Confirmed Test" + blocks] == pytest.approx(0.70)
    assert list(table.index) == [64, 32]  # ranked by the own split's confirmed mean
    # The command shows both, mean ± sd in markdown.
    assert leaderboard.main(["--study", "conf"]) == 0
    out = capsys.readouterr().out
    assert "| Split |" in out and f"Confirmed Test{blocks} |" in out and "0.630 ± 0.042" in out
