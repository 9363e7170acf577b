"""One training run: hyperparameters + dataset in, a plain TrialResult out.

Every engine (Optuna, KerasTuner), Table 1 and any re-run go through run_trial, so they
train, evaluate and time models the same way. trial.py never touches MLflow: callers pass
`on_epoch` to stream the curves wherever they like.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from allsearch.core.hardware import (
    Precision,
    deferred_interrupts,
    interrupt_pending,
    owns_process,
    polled_interrupts,
    start_tensorflow,
)

start_tensorflow()  # quietly, with this process's thread count, before Keras loads it

import keras  # noqa: E402
import numpy as np  # noqa: E402

from allsearch.core.contract import EPOCH_METRICS  # noqa: E402
from allsearch.core.errors import ConfigError  # noqa: E402
from allsearch.core.space import HParams  # noqa: E402
from allsearch.data.dataset import Dataset  # noqa: E402
from allsearch.training.batches import Batches, count, network_batch  # noqa: E402
from allsearch.training.model import HOG_PCA, PIXELS, build_cnn  # noqa: E402
from allsearch.training.results import TrialResult, recall_metric  # noqa: E402
from allsearch.training.user_model import Factory, build, summary_text  # noqa: E402

__all__ = ["TrialResult", "run_trial", "model_inputs", "network_inputs", "trace_predict",
           "timed_predict", "latency_ms", "recall_metric", "Precision"]
LATENCY_WARMUP = 5
PREDICT_BATCH = 32  # Keras' default predict batch, as the paper's script would have used
LATENCY_SAMPLES = 50


class _EpochRecorder(keras.callbacks.Callback):
    """Keeps the per-epoch logs and forwards them as they arrive; times each epoch's
    validation pass (fit runs it through evaluate, which calls these test hooks)."""

    def __init__(self, history: dict[str, list[float]],
                 on_epoch: Callable[[int, dict[str, float]], None] | None) -> None:
        super().__init__()
        self.history = history
        self.on_epoch = on_epoch
        self.val_pass_s: list[float] = []
        self._val_started = 0.0

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._val_started = time.perf_counter()

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        self.val_pass_s.append(time.perf_counter() - self._val_started)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if interrupt_pending():
            return  # an epoch cut by a signal (_StopOnSignal) is not recorded as one
        values = {k: float(v) for k, v in (logs or {}).items() if k in EPOCH_METRICS}
        for name, value in values.items():
            self.history.setdefault(name, []).append(value)
        if self.on_epoch is not None:
            self.on_epoch(epoch, values)


class _Deferring(keras.callbacks.Callback):
    """A caller's callback (a pruner's, which writes each epoch's report to the study's
    storage) run with signals deferred to the end of each of its epoch hooks."""

    def __init__(self, callback: keras.callbacks.Callback) -> None:
        super().__init__()
        self.callback = callback

    def set_model(self, model: keras.Model) -> None:
        super().set_model(model)
        self.callback.set_model(model)

    def set_params(self, params: dict[str, Any]) -> None:
        super().set_params(params)
        self.callback.set_params(params)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.callback.on_train_begin(logs)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.callback.on_train_end(logs)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.callback.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if interrupt_pending():
            return  # nothing is reported of an epoch cut by a signal
        with deferred_interrupts():
            self.callback.on_epoch_end(epoch, logs)


class _StopOnSignal(keras.callbacks.Callback):
    """Ends fit at the next batch after SIGINT or SIGTERM (polled_interrupts holds the
    signal): Keras stops as it does for early stopping, skips the rest of the validation
    pass, and frees its input pipeline; run_trial then raises KeyboardInterrupt."""

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if interrupt_pending():
            self.model.stop_training = True

    def on_test_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if interrupt_pending():
            self.model.stop_evaluating = True


def model_inputs(dataset: Dataset, split: str, features: str) -> Any:
    """What the network for this feature mode takes for one split."""
    images = getattr(dataset, f"x_{split}")
    if features == "pixels":
        return images
    if dataset.features is None:
        raise ConfigError(f"features={features!r} needs the HOG/PCA features: call "
                          f"allsearch.data.features.add_hog_pca(dataset) before run_trial")
    return network_inputs(images, dataset.features.split(split), features)


def network_inputs(images: np.ndarray, components: np.ndarray | None, features: str) -> Any:
    """The network's inputs from (N, H, W, 1|3) images and their HOG/PCA components: the one
    place that knows how each feature mode feeds the network (training and serving)."""
    if features == "pixels":
        return images
    return components if features == "hog_pca" else {PIXELS: images, HOG_PCA: components}


def class_weights(labels: np.ndarray, n_classes: int, mode: str) -> dict[int, float] | None:
    """Keras class weights: None, or 'balanced' (n / (k * count), scikit-learn's rule), so a
    rarer class (Benign has half the images of Early here) weighs as much in the loss."""
    if mode == "none":
        return None
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    found = dict(zip(present.tolist(), weights.tolist(), strict=True))
    return {i: float(found.get(i, 1.0)) for i in range(n_classes)}


def run_trial(dataset: Dataset, hparams: HParams, *, seed: int = 0,
              precision: Precision = "float32", callbacks: Sequence[keras.callbacks.Callback] = (),
              on_epoch: Callable[[int, dict[str, float]], None] | None = None,
              keep_model: bool = True, history: dict[str, list[float]] | None = None,
              factory: Factory | None = None) -> TrialResult:
    """Train the factory's model on the train split, then evaluate and time val and test.

    `factory`: a network of one's own (allsearch.training.user_model; default the paper's CNN family).
    `callbacks` go to fit (e.g. a pruning callback, which may raise to stop the run);
    `history`, when given, is filled epoch by epoch, so a caller keeps the curves of a run
    that was stopped early.
    """
    clock = time.perf_counter()
    _fresh_session()
    keras.utils.set_random_seed(seed)
    keras.mixed_precision.set_global_policy(
        "mixed_bfloat16" if precision == "bfloat16" else "float32")
    try:
        n_features = dataset.features.n_components if dataset.features is not None else 100
        model = (build_cnn(hparams, dataset.n_classes, input_shape=dataset.image_shape,
                           n_features=n_features)
                 if factory is None or factory.function is None else
                 build(factory, hparams, dataset.image_shape, dataset.n_classes))
        inputs = _Inputs.of(dataset, hparams.features)
        recorder = _EpochRecorder({} if history is None else history, on_epoch)
        started = time.perf_counter()
        _fit(model, dataset, hparams, inputs, recorder, callbacks, seed)
        # Where the trial's seconds went (metrics time_*_s, docs/design.md).
        timings = {"time_build_s": started - clock, "time_fit_s": time.perf_counter() - started}
        return _evaluate(model, dataset, hparams, recorder, inputs.x_test, seed=seed,
                         precision=precision, timings=timings, keep_model=keep_model)
    finally:
        keras.mixed_precision.set_global_policy("float32")


class _Inputs(NamedTuple):
    """What the network takes for each split, and the one-hot labels fit needs."""

    x_train: Any
    y_train: np.ndarray
    x_val: Any
    y_val: np.ndarray
    x_test: Any

    @classmethod
    def of(cls, dataset: Dataset, features: str) -> _Inputs:
        def one_hot(labels: np.ndarray) -> np.ndarray:
            return keras.utils.to_categorical(labels, dataset.n_classes)

        return cls(model_inputs(dataset, "train", features), one_hot(dataset.y_train),
                   model_inputs(dataset, "val", features), one_hot(dataset.y_val),
                   model_inputs(dataset, "test", features))


def _fit(model: keras.Model, dataset: Dataset, hparams: HParams, inputs: _Inputs,
         recorder: _EpochRecorder, callbacks: Sequence[keras.callbacks.Callback],
         seed: int) -> None:
    """Train `model` on the train split, validating each epoch (`recorder` keeps the curves
    and the validation passes' times); the images go in batch by batch (Batches: uint8
    pixels to float32 per batch), in an order drawn from `seed` each epoch."""
    early_stop = [] if not hparams.patience else [keras.callbacks.EarlyStopping(
        monitor="val_accuracy", mode="max", patience=hparams.patience,
        restore_best_weights=True)]  # restores at the end whether or not it stopped
    early_stop += learning_rate_schedule(hparams)
    # The validation pass runs at Keras' predict batch (32), the batch the test split is
    # timed at: its last pass over the kept weights gives the validation figures.
    with polled_interrupts():  # a signal stops the training at its next batch
        model.fit(Batches(inputs.x_train, inputs.y_train, batch_size=hparams.batch_size,
                          seed=seed),
                  epochs=hparams.epochs,
                  validation_data=Batches(inputs.x_val, inputs.y_val, batch_size=PREDICT_BATCH),
                  shuffle=False, verbose=0,
                  class_weight=class_weights(dataset.y_train, dataset.n_classes,
                                             hparams.class_weights),
                  callbacks=[_StopOnSignal(), recorder, *early_stop,
                             *(_Deferring(c) for c in callbacks)])


def _evaluate(model: keras.Model, dataset: Dataset, hparams: HParams, recorder: _EpochRecorder,
              x_test: Any, *, seed: int, precision: Precision, timings: dict[str, float],
              keep_model: bool) -> TrialResult:
    """The trained model's result: validation figures from fit's passes, test accuracy and
    prediction times measured now; `timings` (build, fit) gain time_evaluate_s."""
    fitted = time.perf_counter()
    history = recorder.history
    epochs_run = len(history.get("loss", []))
    # The epoch whose weights the model keeps: the last, or the best one under patience
    # (EarlyStopping keeps the first epoch that reached the best validation accuracy).
    kept_epoch = (int(np.argmax(history["val_accuracy"])) + 1
                  if hparams.patience and history.get("val_accuracy") else epochs_run)
    # Validation accuracy and prediction time come from fit's pass over the validation
    # split with the weights the model keeps (a second pass would cost a prediction of
    # the whole split per trial and give the same accuracy).
    val_accuracy = history["val_accuracy"][kept_epoch - 1]
    val_time = recorder.val_pass_s[kept_epoch - 1]
    trace_predict(model, x_test)
    test_probs, test_time = timed_predict(model, x_test)
    p50, p95 = latency_ms(model, x_test)
    timings["time_evaluate_s"] = time.perf_counter() - fitted
    return TrialResult(
        hparams=hparams, seed=seed, class_names=dataset.class_names, history=history,
        epochs_run=epochs_run, kept_epoch=kept_epoch, train_time_s=timings["time_fit_s"],
        val_accuracy=float(val_accuracy),
        test_accuracy=float((test_probs.argmax(1) == dataset.y_test).mean()),
        val_prediction_time_s=val_time, test_prediction_time_s=test_time,
        latency_ms_p50=p50, latency_ms_p95=p95, y_test=dataset.y_test,
        test_probabilities=test_probs, test_files=dataset.files_test, precision=precision,
        model=model if keep_model else None, timings=timings, summary=summary_text(model),
        n_params=int(model.count_params()),
        model_size_mb=sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize
                          for w in model.weights) / 2**20,
    )


_trained_in_this_process = False


def learning_rate_schedule(hparams: HParams) -> list[keras.callbacks.Callback]:
    """The callback that moves the learning rate (none for the paper's constant rate)."""
    import math

    rate, epochs = hparams.learning_rate, hparams.epochs
    if hparams.lr_schedule == "cosine":
        # Per epoch from the full rate down towards 0 at the last epoch.
        return [keras.callbacks.LearningRateScheduler(
            lambda epoch: rate * 0.5 * (1 + math.cos(math.pi * epoch / max(1, epochs))))]
    if hparams.lr_schedule == "plateau":
        return [keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2,
                                                  min_lr=rate / 100, verbose=0)]
    return []


def _fresh_session() -> None:
    # Without this, every trial's graph stays in memory and the process grows trial by trial.
    # The first trial of a process moves what the imports made (TensorFlow, Keras, MLflow,
    # the dataset) into Python's permanent generation: every later collection skips it, which
    # takes a trial's clear-up from about a second to a few hundredths (measured in
    # benchmarks/efficiency.py's build stage). Only in a process of allsearch's own (a command
    # or a worker, hardware.own_process): a library caller's garbage collector stays theirs.
    global _trained_in_this_process
    if _trained_in_this_process:
        keras.backend.clear_session()
        gc.collect()
    else:
        gc.collect()
        if owns_process():
            gc.freeze()
    _trained_in_this_process = True


def _first(inputs: Any, n: int) -> Any:
    if isinstance(inputs, dict):
        return {k: v[:n] for k, v in inputs.items()}
    return inputs[:n]


def _predict(model: keras.Model, inputs: Any) -> np.ndarray:
    # Keras' default predict batch (32), as the paper's script would have used; uint8 pixels
    # become the network's float32 a batch at a time (Batches).
    return np.asarray(model.predict(Batches(inputs, batch_size=PREDICT_BATCH), verbose=0),
                      dtype=np.float32)


def trace_predict(model: keras.Model, inputs: Any) -> None:
    """Trace the predict function outside the timings: on a full batch and a smaller one,
    after which it takes any batch size (Keras traces with reduce_retracing: a warm-up on
    one size alone left a second trace inside the timed prediction)."""
    _predict(model, _first(inputs, PREDICT_BATCH + 1))


def timed_predict(model: keras.Model, inputs: Any) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    probabilities = _predict(model, inputs)
    return probabilities, time.perf_counter() - started


def latency_ms(model: keras.Model, inputs: Any) -> tuple[float, float]:
    """p50/p95 of one-image prediction, after a warm-up."""
    n = count(inputs)
    picks = [i % n for i in range(LATENCY_WARMUP + LATENCY_SAMPLES)]
    times = []
    for j, i in enumerate(picks):
        one = network_batch(inputs, slice(i, i + 1))
        started = time.perf_counter()
        model.predict_on_batch(one)
        if j >= LATENCY_WARMUP:
            times.append((time.perf_counter() - started) * 1000.0)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))
