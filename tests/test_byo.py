"""A network of your own (--model MODULE:FUNCTION, or the function itself) on images as the user
has them (--color rgb, --image-size): the example factory through a study, its leaderboard and
predict on an RGB file; each mistake one line and exit code 2 before any store exists (issue 29)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from allsearch import leaderboard, predict, study
from allsearch.core.contract import BUILT_IN_MODEL
from allsearch.data.dataset import load_dataset
from allsearch.data.images import decode_file, to_network_input
from allsearch.data.synthetic import write_dataset
from allsearch.engines import confirm as confirm_lib
from allsearch.readers import predict as predict_lib
from allsearch.tracking.store import resolve_tracking_uri
from allsearch.training import user_model

REPO = Path(__file__).resolve().parents[1]
SIZE = 32  # the example's strided stem and 3 stages take 32 px (32 -> 16 -> 8 -> 4)


@pytest.fixture
def rgb_data(tmp_path: Path) -> Path:
    """4 classes x 10 RGB PNGs of 40 px, each class's square in its own colour."""
    return write_dataset(tmp_path / "rgb", per_class=10, size=40, color="rgb", junk=False)


@pytest.fixture
def here(tmp_path: Path) -> Path:
    """The current folder holds examples/, as the repository root does."""
    shutil.copytree(REPO / "examples", tmp_path / "examples",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def tiny_space(folder: Path, *, model: bool = True) -> Path:
    """examples/resnet.yaml trained for one epoch (and without its `model:` line if not `model`)."""
    text = (REPO / "examples" / "resnet.yaml").read_text().replace("epochs: 15", "epochs: 1")
    if not model:
        text = text.replace("model: examples.resnet:build\n", "")
    path = folder / ("resnet-tiny.yaml" if model else "knobs-only.yaml")
    path.write_text(text)
    return path


def runs_of(study_name: str) -> tuple[object, list[object]]:
    client = MlflowClient(resolve_tracking_uri(None))
    experiment = client.get_experiment_by_name(study_name)
    runs = client.search_runs([experiment.experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("allsearch.role") == "parent"]
    return parent, [r for r in runs if r.data.tags.get("allsearch.role") == "trial"]


@pytest.mark.train
def test_the_example_network_on_rgb_images_through_study_leaderboard_and_predict(
        rgb_data: Path, here: Path, capsys: pytest.CaptureFixture) -> None:
    path_before = list(sys.path)
    code = study.main(["--space", str(tiny_space(here)), "--model", "examples.resnet:build",
                       "--color", "rgb", "--image-size", str(SIZE), "--data", str(rgb_data),
                       "--trials", "2", "--study-name", "byo", "--no-progress"])
    assert code == 0
    # The current folder was on sys.path only while examples.resnet was imported.
    assert sys.path == path_before
    parent, trials = runs_of("byo")
    assert parent.data.params["model_factory"] == "examples.resnet:build"
    assert (parent.data.params["image_size"], parent.data.params["color"]) == (str(SIZE), "rgb")
    assert len(trials) == 2
    client = MlflowClient(resolve_tracking_uri(None))
    for run in trials:
        params = run.data.params
        assert params["model_factory"] == "examples.resnet:build"
        assert (params["image_size"], params["color"]) == (str(SIZE), "rgb")
        knobs = json.loads(params["model_knobs"])
        assert set(knobs) == {"width", "depth"} and params["width"] == str(knobs["width"])
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert "network_summary.txt" in names
    summary = Path(client.download_artifacts(trials[0].info.run_id, "network_summary.txt",
                                             str(here))).read_text()
    assert "resnet_w" in summary and "Total params" in summary

    capsys.readouterr()
    assert leaderboard.main(["--study", "byo", "--format", "csv"]) == 0
    header = capsys.readouterr().out.splitlines()[0].split(",")
    assert {"width", "depth", "learning_rate"} <= set(header) and "conv_layers" not in header

    image = rgb_data / "Pre" / "Pre_003.png"
    assert predict.main([str(image), "--study", "byo", "--format", "json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    # The champion decodes a new file exactly as the training images were: 32 px RGB.
    loaded = predict_lib.load_classifier("models:/allsearch-byo@champion")
    network = loaded.unwrap_python_model().network
    assert network.inputs[0].shape[1:] == (SIZE, SIZE, 3)
    expected = network.predict(to_network_input(decode_file(image, SIZE, "rgb")[None]), verbose=0)[0]
    got = [row[f"p_{name}"] for name in ("Benign", "Early", "Pre", "Pro")]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def small_net(params: dict, input_shape: tuple, n_classes: int):
    """A network of one's own defined in this module: given to run_study as itself."""
    import keras

    CALLS.append((dict(params), input_shape, n_classes))
    return keras.Sequential([keras.Input(input_shape), keras.layers.Conv2D(params["width"], 3),
                             keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(n_classes, activation="softmax")])


CALLS: list[tuple[dict, tuple, int]] = []


@pytest.mark.train
def test_run_study_takes_the_function_itself_and_logs_its_name(rgb_data: Path, tmp_path: Path
                                                               ) -> None:
    CALLS.clear()
    space = tmp_path / "small.yaml"
    space.write_text("params:\n  width: {type: categorical, choices: [4, 6]}\n"
                     "fixed: {epochs: 1, batch_size: 16}\nbaseline: {width: 4}\n")
    result = study.run_study(model=small_net, space=str(space), data=str(rgb_data), trials=1,
                             image_size=SIZE, color="rgb", progress=False, study_name="fn")
    # Called once to check it on the data before the study, then once for trial 0.
    assert len(CALLS) == 2 and CALLS[-1][1:] == ((SIZE, SIZE, 3), 4)
    assert CALLS[-1][0]["width"] == 4 and CALLS[-1][0]["learning_rate"] == 0.001
    assert result.best_params["width"] == 4
    parent, [trial] = runs_of("fn")
    name = f"{small_net.__module__}:{small_net.__qualname__}"
    assert parent.data.params["model_factory"] == trial.data.params["model_factory"] == name


@pytest.mark.train
def test_a_recorded_study_of_ones_own_network_is_confirmed_with_it(rgb_data: Path, here: Path
                                                                   ) -> None:
    """The network and the image settings travel with the study's settings: `confirm` on a
    record folder trains the same factory on RGB images of the same size."""
    record = here / "record"
    assert study.main(["--space", str(tiny_space(here)), "--color", "rgb", "--image-size",
                       str(SIZE), "--data", str(rgb_data), "--trials", "1", "--record",
                       str(record), "--no-progress"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = confirm_lib.confirm(study="resnet", top=1, seeds=1, record=str(record),
                                progress=False)
    assert table["n"].tolist() == [1]
    from allsearch.tracking.recorder import read_runs

    confirmed = [r for r in read_runs(str(record)).values()
                 if r.params.get("engine") == "confirm"]
    assert [(r.params["model_factory"], r.params["color"], r.params["image_size"])
            for r in confirmed] == [("examples.resnet:build", "rgb", str(SIZE))]
    assert "width" in confirmed[0].params


@pytest.mark.train
def test_keras_tuner_trains_ones_own_network_with_its_knobs(rgb_data: Path, here: Path) -> None:
    assert study.main(["--space", str(tiny_space(here)), "--engine", "keras-tuner", "--tuner",
                       "random", "--color", "rgb", "--image-size", str(SIZE), "--data",
                       str(rgb_data), "--trials", "2", "--no-progress"]) == 0
    _, trials = runs_of("resnet-random")
    assert len(trials) == 2
    for run in trials:
        assert run.data.params["model_factory"] == "examples.resnet:build"
        assert run.data.tags["state"] == "COMPLETE"
        assert run.data.params["width"] == str(json.loads(run.data.params["model_knobs"])["width"])


def test_a_module_in_the_current_folder_is_found_and_sys_path_put_back(tmp_path: Path) -> None:
    (tmp_path / "here_net.py").write_text("def build(params, input_shape, n_classes):\n"
                                          "    return 'built'\n")
    before = list(sys.path)
    factory = user_model.load("here_net:build")
    assert factory.function({}, (1, 1, 1), 2) == "built" and factory.name == "here_net:build"
    assert sys.path == before and str(tmp_path) not in sys.path
    assert user_model.load(None) is user_model.PAPER
    assert user_model.load(BUILT_IN_MODEL).built_in


NETS = """
import keras

def boom(params, input_shape, n_classes):
    raise ValueError("width must be even")

def not_keras(params, input_shape, n_classes):
    return {"layers": 3}

def three_units(params, input_shape, n_classes):
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                             keras.layers.Dense(3, activation="softmax")])
"""
KNOBS = "params:\n  width: {type: categorical, choices: [4, 8]}\nfixed: {epochs: 1}\n"


@pytest.mark.parametrize("model, message", [
    ("no_such_module:build", "--model no_such_module:build: no module 'no_such_module' in the "
                             "current folder"),
    ("my_nets:missing", "--model my_nets:missing: module 'my_nets'"),
    ("my_nets:boom", "--model my_nets:boom raised ValueError: width must be even"),
    ("my_nets:not_keras", "--model my_nets:not_keras returned a dict, not a keras.Model"),
    ("my_nets:three_units", "its network's output has 3 units, but the data has 4 classes"),
    (None, "unknown hyperparameter 'width'"),
])
def test_each_mistake_in_a_network_is_one_line_and_exit_2_before_any_store(
        model: str | None, message: str, tmp_data_rgb: Path, tmp_path: Path) -> None:
    (tmp_path / "my_nets.py").write_text(NETS)
    space = tmp_path / "knobs.yaml"
    space.write_text(KNOBS)
    argv = ["--space", str(space), "--data", str(tmp_data_rgb), "--trials", "1", "--color",
            "rgb", "--image-size", str(SIZE), "--no-progress"]
    done = subprocess.run([sys.executable, "-m", "allsearch.study", *argv,
                           *(["--model", model] if model else [])],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    # Said before any study or store exists.
    assert not (tmp_path / "mlruns" / "optuna.db").exists()
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()


@pytest.fixture
def tmp_data_rgb(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "rgb", per_class=8, size=SIZE, color="rgb", junk=False,
                         duplicate=False)


def test_rgb_images_have_a_fingerprint_and_cache_of_their_own(rgb_data: Path) -> None:
    gray = load_dataset(rgb_data, image_size=SIZE)
    rgb = load_dataset(rgb_data, image_size=SIZE, color="rgb")
    assert gray.image_shape == (SIZE, SIZE, 1) and rgb.image_shape == (SIZE, SIZE, 3)
    assert rgb.fingerprint != gray.fingerprint
    again = load_dataset(rgb_data, image_size=SIZE, color="rgb")
    assert again.report.cache_hit and np.array_equal(again.x_train, rgb.x_train)
    assert rgb.image_settings == {"image_size": SIZE, "color": "rgb"}


def test_the_example_network_has_its_batch_norm_choices_as_knobs(here: Path) -> None:
    """examples/resnet.py standardizes each image and uses batch-norm momentum 0.9 unless its
    knobs say otherwise; examples/resnet-ablation.yaml is the grid over the two (no training)."""
    import keras

    from allsearch.core.space import load_space

    sys.path.insert(0, str(here))
    try:
        from examples import resnet
    finally:
        sys.path.remove(str(here))

    def choices(params: dict[str, object]) -> tuple[bool, set[float]]:
        model = resnet.build({"width": 8, "depth": 1, **params}, (SIZE, SIZE, 1), 4)
        return ("standardize" in [layer.name for layer in model.layers],
                {layer.momentum for layer in model.layers
                 if isinstance(layer, keras.layers.BatchNormalization)})

    assert choices({}) == (True, {0.9})
    assert choices({"image_standardize": False, "bn_momentum": 0.99}) == (False, {0.99})
    space = load_space(here / "examples" / "resnet-ablation.yaml", own_network=True)
    grid = {spec.name: spec.choices for spec in space.params}
    assert grid == {"image_standardize": (True, False), "bn_momentum": (0.9, 0.99)}
    assert space.fixed["lr_schedule"] == load_space(
        here / "examples" / "resnet.yaml", own_network=True).fixed["lr_schedule"] == "cosine"
