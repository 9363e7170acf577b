"""The logged model on new images: the pyfunc (allsearch.training.serving), `python -m allsearch.predict`,
and the model served by `mlflow models serve`."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pytest

from allsearch import predict, study
from allsearch.core.space import HParams
from allsearch.data.dataset import load_dataset
from allsearch.data.features import add_hog_pca
from allsearch.readers import predict as predict_lib
from allsearch.tracking.store import resolve_tracking_uri
from allsearch.tracking.tracked import start_trial
from allsearch.tracking.tracking import Tracker
from allsearch.training import serving
from allsearch.training.trial import run_trial
from conftest import free_port, one_line_error

SPACE = """
name: tiny
params:
  batch_size: {type: categorical, choices: [8, 16]}
fixed: {epochs: 2, conv_layers: 2, dense_units: 32, features: FEATURES}
baseline: {batch_size: 8}
"""


def tiny_study(tiny_data: Path, tmp_path: Path, features: str = "both") -> str:
    """A two-trial study whose champion is registered; returns its name."""
    space = tmp_path / "tiny.yaml"
    space.write_text(SPACE.replace("FEATURES", features))
    code = study.main(["--space", str(space), "--data", str(tiny_data), "--trials", "2",
                       "--study-name", "served", "--no-progress", "--trials-per-process", "0",
                       "--precision", "float32", "--pruner", "none"])
    assert code == 0
    return "served"


@pytest.fixture(scope="module")
def served_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One study trained for the tests that only read its champion (each would otherwise train
    its own): the tracking URI of its store. Those tests share an xdist group, so one worker
    trains it once."""
    from allsearch.data.synthetic import write_dataset

    folder = tmp_path_factory.mktemp("served")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("ALLSEARCH_CACHE_DIR", str(folder / "mlruns" / "cache"))
        patch.setenv("ALLSEARCH_ARTIFACT_ROOT", str(folder / "mlruns" / "artifacts"))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the fixture's junk files are skipped
            tiny_study(write_dataset(folder / "tiny"), folder)
        return resolve_tracking_uri()


@pytest.fixture
def served(served_store: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The shared study's store as this test's tracking URI (read, never written)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", served_store)
    return "served"


@pytest.mark.train
@pytest.mark.parametrize("features", ["pixels", "hog_pca", "both"])
def test_logged_model_reads_image_files_exactly_as_training_did(tiny_data: Path, features: str
                                                                ) -> None:
    """The pyfunc on the raw test files (48x48 PNGs, resized on the way in) gives the
    probabilities the trial computed on the training pipeline's arrays: same preprocessing."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = add_hog_pca(load_dataset(tiny_data), n_components=8)
    result = run_trial(dataset, HParams(epochs=2, batch_size=8, conv_layers=2, dense_units=32,
                                        features=features), seed=0)
    run = start_trial(Tracker("serving"), parent_id=None, name="t", params={})
    uri = run.log_result(result, dataset=dataset, log_model=True)
    mlflow.set_tracking_uri(resolve_tracking_uri())
    loaded = mlflow.pyfunc.load_model(uri)
    files = [tiny_data / rel for rel in result.test_files[:5]]
    frame = loaded.predict(serving.images_frame(
        [serving.encode_image(f.read_bytes()) for f in files]))
    columns = [serving.probability_column(c) for c in dataset.class_names]
    assert list(frame.columns) == ["class", "confidence", *columns]
    np.testing.assert_allclose(frame[columns].to_numpy(), result.test_probabilities[:5], atol=1e-5)
    assert list(frame["class"]) == [dataset.class_names[i]
                                    for i in result.test_probabilities[:5].argmax(1)]
    # base64 as `base64` writes it (76-column lines) and as a data URL are read too.
    wrapped = base64.encodebytes(files[0].read_bytes()).decode()
    data_url = "data:image/png;base64," + serving.encode_image(files[0].read_bytes())
    again = loaded.predict(serving.images_frame([wrapped, data_url]))
    np.testing.assert_allclose(again[columns].to_numpy(), frame[columns].to_numpy()[[0, 0]],
                               atol=1e-6)
    with pytest.raises(Exception, match="image 1: not base64"):
        loaded.predict(serving.images_frame([serving.encode_image(files[0].read_bytes()), "%%"]))
    with pytest.raises(Exception, match="image 0: not a readable image"):
        loaded.predict(serving.images_frame([serving.encode_image(b"plain text, not a PNG")]))


@pytest.mark.train
@pytest.mark.xdist_group("served")
def test_predict_command_on_files_and_labelled_folders(served: str, tiny_data: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    capsys.readouterr()
    one = tiny_data / "Benign" / sorted(p.name for p in (tiny_data / "Benign").glob("*.png"))[0]
    assert predict.main([str(one), "--format", "json"]) == 0
    out = capsys.readouterr()
    rows = json.loads(out.out)
    assert len(rows) == 1 and rows[0]["file"] == str(one)
    assert rows[0]["class"] in {"Benign", "Early", "Pre", "Pro"}
    assert sum(rows[0][f"p_{c}"] for c in ("Benign", "Early", "Pre", "Pro")) == pytest.approx(1, abs=1e-4)
    assert "models:/allsearch-served@champion" in out.err

    # A folder of class folders is labelled: true class beside the prediction, and accuracy.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its .DS_Store and notes.txt are skipped
        assert predict.main([str(tiny_data), "--format", "csv", "--study", "served"]) == 0
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert lines[0].startswith("file,true_class,class,confidence,p_Benign")
    assert len(lines) == 1 + len(list(tiny_data.glob("*/*.png")))  # duplicates too
    assert "accuracy: " in out.err

    # A loose file beside a labelled folder: no true class (null in JSON), not counted.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert predict.main([str(tiny_data), str(one), "--format", "json"]) == 0
    out = capsys.readouterr()
    rows = json.loads(out.out)  # valid JSON: no NaN
    assert rows[-1]["file"] == str(one) and rows[-1]["true_class"] is None
    n_labelled = len(rows) - 1
    assert f"/{n_labelled} = " in out.err

    # The same through the command line, as a user runs it.
    done = subprocess.run([sys.executable, "-m", "allsearch.predict", str(one)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MLFLOW_TRACKING_URI": resolve_tracking_uri()})
    assert done.returncode == 0, done.stderr[-2000:]
    assert str(one) in done.stdout and "confidence" in done.stdout


@pytest.mark.train
@pytest.mark.xdist_group("served")
def test_predict_reports_each_unreadable_image_in_one_line(served: str, tiny_data: Path) -> None:
    """A folder with a corrupt and a truncated PNG among good ones (and the fixture's
    notes.txt and .DS_Store): the good ones are predicted, each other file is one line on
    stderr with its path and reason, no source line and no Python object."""
    good = sorted(tiny_data.glob("*/*.png"))
    corrupt, cut = tiny_data / "Pre" / "corrupt.png", tiny_data / "Early" / "cut.png"
    corrupt.write_bytes(os.urandom(600))
    cut.write_bytes(good[0].read_bytes()[:200])
    done = subprocess.run([sys.executable, "-m", "allsearch.predict", str(tiny_data),
                           "--format", "csv"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MLFLOW_TRACKING_URI": resolve_tracking_uri()})
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(done.stdout.splitlines()) == 1 + len(good)
    benign = tiny_data / "Benign"
    expected = [f"warning: skipped {benign / '.DS_Store'}: hidden file",
                f"warning: skipped {cut}: not a readable image (OSError: image file is truncated)",
                f"warning: skipped {benign / 'notes.txt'}: not an image (.txt)",
                f"warning: skipped {corrupt}: not a readable image "
                f"(UnidentifiedImageError: cannot identify image file)"]
    skipped = [line for line in done.stderr.splitlines() if "skipped" in line]
    assert sorted(skipped) == sorted(expected), done.stderr[-3000:]
    assert "object at 0x" not in done.stderr and "warnings.warn" not in done.stderr
    assert "model: models:/allsearch-served@champion" in done.stderr


def test_predict_unreachable_tracking_server_fails_fast(tiny_data: Path) -> None:
    """MLflow retries an HTTP store for minutes; predict says it in one line at once,
    whether it looks for the champion or loads a given model."""
    image = str(next((tiny_data / "Pre").glob("*.png")))
    for extra in ([], ["--model", "runs:/0123456789abcdef0123456789abcdef/model"],
                  ["--study", "served"]):
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "allsearch.predict", image, "--tracking-uri",
                               "http://127.0.0.1:1", *extra], capture_output=True, text=True,
                              timeout=120)
        seconds = time.monotonic() - started
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert lines == ["error: MLflow server 'http://127.0.0.1:1' cannot be reached ([Errno 111] "
                         "Connection refused); start it (mlflow server ...) or fix --tracking-uri"], \
            done.stderr[-2000:]
        assert seconds < 60, f"{extra}: {seconds:.0f} s"  # MLflow's own retries: 252 s


@pytest.mark.train
@pytest.mark.xdist_group("served")
def test_predict_mistakes_get_one_line(served_store: str, tiny_data: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    image = next((tiny_data / "Pre").glob("*.png"))
    assert predict.main([str(image)]) == 2  # nothing trained yet (this test's own store)
    assert "no champion model" in one_line_error(capsys)

    monkeypatch.setenv("MLFLOW_TRACKING_URI", served_store)
    capsys.readouterr()
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    assert predict.main([str(text)]) == 2
    assert "is not an image file" in one_line_error(capsys)
    fake = tmp_path / "fake.png"
    fake.write_text("not an image either")
    assert predict.main([str(fake)]) == 2
    assert "not a readable image" in one_line_error(capsys)
    assert predict.main([str(tmp_path / "missing.png")]) == 2
    assert "does not exist" in one_line_error(capsys)
    assert predict.main([str(image), "--model", "models:/no-such-model@champion"]) == 2
    assert "cannot be loaded" in one_line_error(capsys)

    other = tmp_path / "other"  # class folders the model never saw
    for name in ("Healthy", "Sick"):
        (other / name).mkdir(parents=True)
        shutil.copy(image, other / name / "a.png")
    assert predict.main([str(other)]) == 2
    line = one_line_error(capsys)
    assert "trained on classes ['Benign', 'Early', 'Pre', 'Pro']" in line and "Healthy" in line
    assert predict.main([str(other), "--unlabelled"]) == 0  # predicted anyway when asked


@pytest.mark.train
@pytest.mark.slow
@pytest.mark.xdist_group("served")
def test_mlflow_models_serve_answers_a_request(served: str, tiny_data: Path, tmp_path: Path) -> None:
    """The registered champion served by MLflow's own scoring server, on loopback."""
    port = free_port()
    # MLflow starts uvicorn by name: the venv's bin/ must be on PATH, as when it is activated.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": resolve_tracking_uri(),
           "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": path}
    log = tmp_path / "serve.log"
    with open(log, "w") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m",
             "models:/allsearch-served@champion", "--env-manager", "local", "--host", "127.0.0.1",
             "--port", str(port)],
            env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 180
        while True:
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, "the scoring server did not answer in 180 s"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                time.sleep(1)
        image = next((tiny_data / "Early").glob("*.png"))
        body = json.dumps({"dataframe_records": [
            {"image": base64.b64encode(image.read_bytes()).decode()}]}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    (row,) = answer["predictions"]
    assert row["class"] in {"Benign", "Early", "Pre", "Pro"}
    assert sum(row[f"p_{c}"] for c in ("Benign", "Early", "Pre", "Pro")) == pytest.approx(1, abs=1e-4)
    # The same image through allsearch.predict gives the same answer.
    loaded = predict_lib.load_classifier("models:/allsearch-served@champion")
    local = predict_lib.predict_files(loaded, [predict_lib.ImageFile(image)])
    assert local["class"][0] == row["class"]
    assert local["confidence"][0] == pytest.approx(row["confidence"], abs=1e-5)

