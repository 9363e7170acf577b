"""Confirmation under another split than the study's (python -m allsearch.confirm --split
blocks --block-size N --embargo M): fresh splits of that kind, the split logged, one split per
confirmation, and the leaderboard's confirmed figures per split."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from allsearch import confirm, leaderboard, study
from allsearch.core.errors import ConfigError
from allsearch.core.splits import SplitSettings
from allsearch.data.dataset import load_dataset
from allsearch.engines import confirm as confirm_lib
from allsearch.tracking.store import resolve_tracking_uri
from conftest import one_line_error

SPACE = """
name: tiny
params:
  batch_size: {type: categorical, choices: [8, 16]}
fixed: {epochs: 1, conv_layers: 1, learning_rate: 0.002, dense_units: 8}
baseline: {batch_size: 8}
"""
BLOCKS = SplitSettings("blocks", block_size=3, embargo=1)


def parents_of(client: MlflowClient, study_name: str) -> dict[str, object]:
    experiment = client.get_experiment_by_name(study_name).experiment_id
    return {r.data.tags["allsearch.study"]: r for r in client.search_runs(
        [experiment], filter_string="tags.`allsearch.role` = 'parent'")}


@pytest.mark.train
def test_a_random_study_is_confirmed_under_blocks(tiny_data: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    space = tmp_path / "tiny.yaml"
    space.write_text(SPACE)
    study.run(trials=2, space=str(space), data=str(tiny_data), progress=False, pruner="none",
              trainer="standin:0")  # the search (random splits) trains nothing
    table = confirm_lib.confirm(study="tiny", top=1, seeds=1, progress=False, split=BLOCKS)
    assert list(table["Split"]) == ["blocks 3, embargo 1"] and list(table["n"]) == [1]
    client = MlflowClient(resolve_tracking_uri())
    parents = parents_of(client, "tiny")
    confirmation = parents["tiny-confirm-blocks"]  # another split: its own confirmation
    assert confirmation.data.tags["allsearch.confirms"] == "tiny"
    assert (confirmation.data.params["split"], confirmation.data.params["block_size"],
            confirmation.data.params["embargo"]) == ("blocks", "3", "1")
    [run] = client.search_runs([confirmation.info.experiment_id],
                               f"tags.`mlflow.parentRunId` = '{confirmation.info.run_id}'")
    params = run.data.params
    assert (params["split"], params["block_size"], params["embargo"]) == ("blocks", "3", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fresh = load_dataset(tiny_data, split_seed=1042, split=BLOCKS)
    assert params["data_fingerprint"] == fresh.fingerprint and params["split_seed"] == "1042"

    # One confirmation never holds two splits: the same name with another block size is
    # refused before anything trains.
    with pytest.raises(ConfigError, match=r"confirmation 'tiny-confirm-blocks' holds splits "
                                          r"'blocks 3, embargo 1', not 'blocks 4, embargo 1'"):
        confirm_lib.confirm(study="tiny", top=1, seeds=1, progress=False,
                        split=SplitSettings("blocks", block_size=4, embargo=1))

    # The leaderboard: the search's rows say random; the confirmed figures say blocks, and no
    # figure of random confirmation is made up from them.
    assert leaderboard.main(["--study", "tiny", "--format", "csv"]) == 0
    shown = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert set(shown["Split"]) == {"random"}
    assert "Confirmed Test" not in shown.columns
    column = "Confirmed Test (blocks 3, embargo 1)"
    assert shown[column].iloc[0] == pytest.approx(run.data.metrics["test_accuracy"])
    assert list(shown["Confirmed n (blocks 3, embargo 1)"]) == [1] + [0] * (len(shown) - 1)


def test_confirm_split_flags_are_checked_in_one_line(capsys: pytest.CaptureFixture) -> None:
    for flags, said in (
            (["--block-size", "5"], "--block-size go(es) with --split KIND"),
            (["--split", "blocks"], "--split blocks needs --block-size N"),
            (["--split", "blocks", "--block-size", "4", "--embargo", "2"],
             "use an embargo under half the block size"),
            (["--split", "groups"], "--split groups needs one of --group-pattern REGEX")):
        assert confirm.main(["--study", "nothing", *flags]) == 2
        assert said in one_line_error(capsys)


def test_the_split_flags_are_the_study_settings_once() -> None:
    """confirm's split flags, the params a run logs and SplitSettings share one list."""
    import dataclasses

    from allsearch.core.config import StudyConfig
    from allsearch.core.splits import FIELDS

    settings = StudyConfig(split="blocks", block_size=5, embargo=1)
    assert set(FIELDS) <= {f.name for f in dataclasses.fields(StudyConfig)}
    made = SplitSettings(*(getattr(settings, name) for name in FIELDS))
    assert made == SplitSettings("blocks", block_size=5, embargo=1)
    assert SplitSettings.from_params(made.params()) == made
    import argparse

    from allsearch.core import config

    parser = argparse.ArgumentParser()
    config.add_arguments(parser, only=FIELDS, defaults=False)
    assert vars(parser.parse_args([])) == dict.fromkeys(FIELDS)
    given = parser.parse_args(["--split", "blocks", "--block-size", "5", "--embargo", "1"])
    assert confirm.split_override(vars(given)) == made
