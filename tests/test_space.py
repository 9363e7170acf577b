"""Search-space files: every shipped file loads; every mistake gets one clear line."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from allsearch.core.errors import SpaceError
from allsearch.core.space import SPACE_DIR, HParams, load_space

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
    ("fixed: &f {epochs: 3}\nbaseline: *f\n", r"YAML aliases \(\*f, line 2\) are not allowed"),
    ("description: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than 20 levels"),
    ("name: [a, b]\n", "key 'name' must be text, got a list"),
    ("objectives: [val_accuracy, [latency_ms_p50]]\n", "'objectives' must be a list of metric"),
    ("params:\n  dropout: {type: float, low: 0.1, high: 1.5}\n",
     r"params.dropout: high 1.5 cannot be used: The 'dropout' hyperparameter must be a float"),
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
    from allsearch.engines.table1 import load_table1

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


def study_error(space: Path, *, memory_gb: int | None = None) -> str:
    """The one line `python -m allsearch.study --space SPACE` ends with (exit 2, no traceback),
    its address space capped at `memory_gb` where given."""
    def cap() -> None:
        limit = memory_gb << 30
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    done = subprocess.run([sys.executable, "-m", "allsearch.study", "--space", str(space),
                           "--trials", "1", "--trainer", "standin:0", "--no-progress"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                          preexec_fn=cap if memory_gb else None)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-3000:]
    return lines[0]


def test_a_space_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: café\ndescription: a Latin-1 file\nparams: {}\n".encode("latin-1"))
    line = study_error(path)
    assert line == f"error: {path}: not UTF-8 text (byte 0xe9 on line 1); save the file as UTF-8"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latin1.yaml"]  # no store was opened


def test_an_alias_bomb_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    """A "billion laughs" file: 9 levels of 10 aliases to the level below, under 600 bytes,
    name 10**9 strings. Expanded (str() of the description) it took 6 GB; the study must refuse
    it in a process held to 2 GB (a refused study stays far under: about 0.2 GB)."""
    levels = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text("name: bomb\ndescription:\n  " + "\n  ".join(levels) + "\n")
    assert path.stat().st_size < 600
    line = study_error(path, memory_gb=2)
    assert line == (f"error: {path}: YAML aliases (*a0, line 4) are not allowed in a search "
                    f"space; write the value out in full")


def test_every_choice_of_every_parameter_is_checked(tmp_path: Path) -> None:
    """13 parameters make 8192 combinations; a bad second choice of the first one was past the
    4096 corners once checked, and failed the trials that drew it, with no reason shown."""
    many = {"batch_norm": "[false, true]", "augment": "[false, true]",
            "standardize": "[false, true]", "pooling": "[flatten, gap]",
            "class_weights": "[none, balanced]", "lr_schedule": "[constant, cosine]",
            "loss": "[categorical_crossentropy, binary_crossentropy]", "patience": "[0, 1]",
            "label_smoothing": "[0.0, 0.1]", "weight_decay": "[0.0, 0.1]",
            "dropout": "[0.1, 0.2]", "filter_multiplier": "[1.0, 0.5]"}
    lines = ["params:", "  dense_units: {type: categorical, choices: [32, 0]}"]
    lines += [f"  {name}: {{type: categorical, choices: {choices}}}" for name, choices in many.items()]
    path = write(tmp_path, "\n".join([*lines, "fixed: {epochs: 2, conv_layers: 2}", ""]))
    with pytest.raises(SpaceError) as info:
        load_space(path)
    assert str(info.value) == (
        f"{path}: params.dense_units: choice 0 cannot be used: The 'dense_units' hyperparameter "
        f"must be an int in [1, 65536]. Got 0 instead.")
    # Each value alone: the last choice of the last parameter, and a range's upper end.
    last = path.read_text().replace("[1.0, 0.5]", "[1.0, 9.0]").replace("[32, 0]", "[32, 64]")
    with pytest.raises(SpaceError, match=r"params.filter_multiplier: choice 9.0 cannot be used"):
        load_space(write(tmp_path, last))
    ranged = last.replace("[1.0, 9.0]", "[1.0, 0.5]").replace(
        "dense_units: {type: categorical, choices: [32, 64]}",
        "dense_units: {type: int, low: 16, high: 100000, log: true}")
    with pytest.raises(SpaceError, match=r"params.dense_units: high 100000 cannot be used"):
        load_space(write(tmp_path, ranged))
    assert load_space(write(tmp_path, ranged.replace("100000", "256"))).param("dense_units").high == 256
