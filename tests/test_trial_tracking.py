"""One real trial on synthetic data, logged to MLflow: params, metrics, artifacts, model."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from allsearch.core.space import HParams
from allsearch.data.dataset import load_dataset
from allsearch.data.features import add_hog_pca
from allsearch.data.images import as_network_input
from allsearch.tracking.store import resolve_tracking_uri
from allsearch.tracking.tracked import start_trial
from allsearch.tracking.tracking import Tracker
from allsearch.training.batches import network_batch
from allsearch.training.serving import encode_image, images_frame
from allsearch.training.trial import EPOCH_METRICS, network_inputs, recall_metric, run_trial


@pytest.fixture
def dataset(tiny_data: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return add_hog_pca(load_dataset(tiny_data), n_components=8)


@pytest.mark.train
@pytest.mark.parametrize("features", ["pixels", "hog_pca", "both"])
def test_run_trial_returns_plain_results(dataset, features: str) -> None:
    seen: list[int] = []
    result = run_trial(dataset, HParams(epochs=2, batch_size=8, features=features), seed=1,
                       on_epoch=lambda epoch, logs: seen.append(epoch))
    assert seen == [0, 1] and result.epochs_run == 2
    assert set(result.history) == set(EPOCH_METRICS)
    assert all(len(v) == 2 for v in result.history.values())
    metrics = result.final_metrics()
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["test_prediction_time_s"] > 0 and metrics["latency_ms_p95"] >= metrics["latency_ms_p50"] > 0
    assert result.test_probabilities.shape == (len(dataset.y_test), 4)
    # The validation figures are fit's last pass over the kept weights: the same accuracy
    # as predicting the split again, and a timed pass.
    x_val = network_inputs(dataset.x_val, dataset.features.split("val")
                           if dataset.features is not None else None, features)
    again = np.asarray(result.model.predict(network_batch(x_val, slice(None)), verbose=0)).argmax(1)
    assert metrics["val_accuracy"] == pytest.approx(float((again == dataset.y_val).mean()), abs=1e-6)
    assert metrics["val_prediction_time_s"] > 0
    assert result.confusion().sum() == len(dataset.y_test)
    # Accuracy is computed from the same predictions that were timed.
    assert metrics["test_accuracy"] == pytest.approx(
        float((result.test_probabilities.argmax(1) == dataset.y_test).mean()))
    # Per-class recall, one metric per class, from the same predictions.
    predicted = result.test_probabilities.argmax(1)
    for index, name in enumerate(dataset.class_names):
        in_class = dataset.y_test == index
        assert metrics[recall_metric(name)] == pytest.approx(float((predicted[in_class] == index).mean()))


def test_recall_metric_names_are_ones_mlflow_takes() -> None:
    assert recall_metric("Benign") == "test_recall_Benign"
    assert recall_metric("Früh phase (1)") == "test_recall_Fr_h phase _1_"


class _ZeroWeightsAfterFirstEpoch(keras.callbacks.Callback):
    """Wrecks the network from epoch 2 on: only a restored first epoch can score well."""

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        if epoch >= 1:
            self.model.set_weights([np.zeros_like(w) for w in self.model.get_weights()])


@pytest.mark.train
def test_patience_keeps_the_best_epoch_and_stops_early(dataset) -> None:
    hp = HParams(epochs=8, batch_size=8, patience=2)
    result = run_trial(dataset, hp, seed=2, callbacks=[_ZeroWeightsAfterFirstEpoch()])
    val_curve = result.history["val_accuracy"]
    assert val_curve[0] > max(val_curve[1:])  # the first epoch was the best one
    assert result.epochs_run == 3 and result.kept_epoch == 1  # stopped 2 epochs after it
    # The model kept after fit is the first epoch's, not the wrecked last one's: its
    # predictions score what fit's validation pass of epoch 1 scored.
    assert result.val_accuracy == pytest.approx(val_curve[0], abs=1e-6)
    kept = np.asarray(result.model.predict(as_network_input(dataset.x_val), verbose=0)).argmax(1)
    assert float((kept == dataset.y_val).mean()) == pytest.approx(val_curve[0], abs=1e-6)
    last = run_trial(dataset, HParams(epochs=3, batch_size=8), seed=2,
                     callbacks=[_ZeroWeightsAfterFirstEpoch()])
    assert last.kept_epoch == last.epochs_run == 3 and last.final_metrics()["kept_epoch"] == 3
    assert last.val_accuracy == pytest.approx(last.history["val_accuracy"][-1], abs=1e-6)


@pytest.mark.train
def test_learns_the_synthetic_task(dataset) -> None:
    result = run_trial(dataset, HParams(epochs=3, batch_size=8), seed=0)
    assert result.val_accuracy >= 0.5  # chance is 0.25: the quadrant blobs are easy


@pytest.mark.train
def test_tracked_trial_has_params_metrics_and_artifacts(dataset, isolated_store: Path) -> None:
    result = run_trial(dataset, HParams(epochs=2, batch_size=8), seed=3)
    tracker = Tracker("single")
    assert tracker.tracking_uri == f"sqlite:///{isolated_store / 'mlflow.db'}"
    run = start_trial(tracker, parent_id=None, name="one",
                              params={**result.hparams.to_dict(), "seed": 3,
                                      "data_fingerprint": dataset.fingerprint})
    for epoch in range(result.epochs_run):
        run.log_epoch(epoch, {k: v[epoch] for k, v in result.history.items()})
    run.log_curves(result.history)
    model_uri = run.log_result(result, dataset=dataset, log_model=True)
    run.end("COMPLETE")

    client = MlflowClient(resolve_tracking_uri())
    logged = client.get_run(run.run_id)
    assert logged.info.status == "FINISHED" and logged.data.tags["state"] == "COMPLETE"
    params = logged.data.params
    assert params["epochs"] == "2" and params["loss"] == "categorical_crossentropy"
    assert params["data_fingerprint"] == dataset.fingerprint and params["seed"] == "3"
    for name in ("val_accuracy", "test_accuracy", "val_prediction_time_s", "test_prediction_time_s",
                 "latency_ms_p50", "latency_ms_p95", "epochs_run", "train_time_s",
                 *(recall_metric(c) for c in dataset.class_names)):
        assert name in logged.data.metrics, name
    curve = client.get_metric_history(run.run_id, "val_accuracy")
    assert [m.step for m in curve][:2] == [0, 1]
    artifacts = {a.path for a in client.list_artifacts(run.run_id)}
    assert {"confusion_matrix.png", "learning_curves.png", "per_class_report.json",
            "test_predictions.csv"} <= artifacts
    report = json.loads(Path(client.download_artifacts(run.run_id, "per_class_report.json")).read_text())
    assert set(dataset.class_names) <= set(report)
    assert (isolated_store / "mlflow.db").is_file()

    import mlflow

    mlflow.set_tracking_uri(resolve_tracking_uri())
    loaded = mlflow.pyfunc.load_model(model_uri)
    assert loaded.metadata.signature is not None
    files = [dataset.report.root + "/" + rel for rel in result.test_files[:3]]
    frame = loaded.predict(images_frame([encode_image(Path(f).read_bytes()) for f in files]))
    assert frame.shape == (3, 2 + 4)  # class, confidence, one probability per class


def test_failed_trial_records_its_error(dataset) -> None:
    tracker = Tracker("failing")
    run = start_trial(tracker, parent_id=None, name="bad", params={"epochs": 1})
    try:
        raise RuntimeError("out of memory (simulated)")
    except RuntimeError as exc:
        run.end("FAIL", error=exc)
    logged = tracker.client.get_run(run.run_id)
    assert logged.info.status == "FAILED" and logged.data.tags["state"] == "FAIL"
    assert "out of memory (simulated)" in logged.data.tags["error"]


@pytest.mark.train
def test_every_wide_space_knob_trains(dataset) -> None:
    hparams = HParams(epochs=2, batch_size=8, conv_layers=2, dense_units=32, features="both",
                      filter_multiplier=0.5, batch_norm=True, pooling="gap", augment=True,
                      class_weights="balanced", learning_rate=0.003, dropout=0.1)
    result = run_trial(dataset, hparams, seed=0)
    assert result.epochs_run == 2 and 0.0 <= result.val_accuracy <= 1.0
    assert result.model.get_layer("conv1").filters == 32
    assert np.isfinite(result.history["loss"]).all()
