"""Search-space files: every shipped file loads; every mistake gets one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from allsearch.errors import SpaceError
from allsearch.space import SPACE_DIR, HParams, load_space

SPACES = sorted(p for p in SPACE_DIR.glob("*.yaml") if p.name != "table1.yaml")


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_every_shipped_space_loads(path: Path) -> None:
    space = load_space(path)
    assert space.params or space.fixed  # samples something, or is one fixed configuration
    assert isinstance(space.hparams(space.baseline or {}), HParams)


def test_paper_space_holds_the_papers_knobs_and_baseline() -> None:
    space = load_space("paper")
    assert [p.name for p in space.params] == ["epochs", "batch_size", "loss", "conv_layers"]
    assert space.hparams(space.baseline) == HParams()


def write(tmp_path: Path, text: str) -> Path:
    f = tmp_path / "space.yaml"
    f.write_text(text)
    return f


@pytest.mark.parametrize("text, message", [
    ("name: x\nparms: {}\n", r"unknown key\(s\) \['parms'\]"),
    ("params:\n  epoch: {type: int, low: 1, high: 2}\n", "unknown hyperparameter 'epoch'"),
    ("params:\n  epochs: {type: int, low: 5, high: 2}\n", r"params.epochs: low \(5\) > high \(2\)"),
    ("params:\n  epochs: {type: int, low: a, high: 2}\n", "'low' must be an int"),
    ("params:\n  epochs: {type: integer, low: 1, high: 2}\n", "needs 'type' set to one of"),
    ("params:\n  loss: {type: categorical, choices: [hinge]}\n", "'loss' hyperparameter must be one of"),
    ("fixed:\n  features: edges\n", "'features' hyperparameter must be one of"),
    ("params: [1, 2\n", "not valid YAML"),
    ("- a\n- b\n", "expected a mapping"),
    ("params:\n  epochs: {type: int, low: 1, high: 3}\nbaseline: {epochs: 9}\n", "outside"),
])
def test_invalid_files_name_file_key_and_rule(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SpaceError, match=message) as info:
        load_space(path)
    assert str(path) in str(info.value)


def test_missing_file_lists_the_shipped_names(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match="not found; .* shipped names: .*paper"):
        load_space(tmp_path / "nope.yaml")


def test_table1_file_holds_the_papers_four_rows() -> None:
    from allsearch.table1 import load_table1

    rows = load_table1()
    assert [(r.hparams.epochs, r.hparams.batch_size, r.hparams.loss) for r in rows] == [
        (15, 64, "categorical_crossentropy"), (15, 64, "binary_crossentropy"),
        (15, 32, "categorical_crossentropy"), (10, 32, "categorical_crossentropy")]
    assert rows[0].paper == {"val_accuracy": 0.80, "val_prediction_time_s": 2.13,
                             "test_accuracy": 0.82, "test_prediction_time_s": 1.98}
    assert all(r.hparams.conv_layers == 3 for r in rows)


def test_wide_space_covers_every_knob_and_starts_from_the_paper() -> None:
    space = load_space("wide")
    second = load_space("wide2")  # the knobs added after the first wide search
    searched = {p.name for p in space.params} | {p.name for p in second.params}
    assert searched | set(second.fixed) == set(HParams.names())
    # wide2 starts from the first search's best, as allsearch/spaces/wide2.yaml says.
    assert second.hparams(second.baseline_params()).learning_rate == 0.0002991988249631271
    assert space.hparams(space.baseline) == HParams()  # trial 0 is the paper's network
    assert space.param("learning_rate").log
    assert space.param("features").choices == ("pixels", "hog_pca", "both")


def test_hparams_from_mlflow_text_round_trips_and_names_a_bad_value() -> None:
    hp = HParams(epochs=27, learning_rate=0.00042, batch_norm=True, filter_multiplier=1.5,
                 pooling="gap", features="both")
    assert HParams.from_text({k: str(v) for k, v in hp.to_dict().items()}) == hp
    with pytest.raises(SpaceError, match=r"run x: batch_norm='maybe' cannot be read as bool"):
        HParams.from_text({"batch_norm": "maybe"}, where="run x")
    with pytest.raises(SpaceError, match=r"epochs='1.5' cannot be read as int"):
        HParams.from_text({"epochs": "1.5"})


def test_patience_must_be_a_non_negative_int() -> None:
    with pytest.raises(SpaceError, match=r"'patience' hyperparameter must be an int in \[0, 10000\]"):
        HParams(patience=-1)
    assert load_space("wide").param("patience").choices == (0, 5, 10)


def test_a_space_samples_hparams_through_an_optuna_trial() -> None:
    import optuna

    space = load_space("wide")
    values = {"epochs": 12, "batch_size": 32, "loss": "binary_crossentropy", "conv_layers": 4,
              "learning_rate": 3e-4, "dropout": 0.25, "dense_units": 64, "filter_multiplier": 1.5,
              "batch_norm": True, "pooling": "gap", "augment": False, "standardize": True,
              "features": "both", "class_weights": "balanced", "patience": 5}
    assert space.sample(optuna.trial.FixedTrial(values)) == HParams(**values)
    # Fixed values come from the file; only the sampled ones from the trial.
    best = load_space("best")
    assert best.sample(optuna.trial.FixedTrial({})).standardize is True
