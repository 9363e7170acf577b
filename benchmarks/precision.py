"""Seconds per training epoch of the paper's network: float32 vs mixed bfloat16.

    python benchmarks/precision.py [--quick] [--data PATH] [--rounds 2] [--epochs 4]

Builds the network with allsearch's factory (batch 64, categorical CE, 3 conv) and trains it
on the training split (2,251 images on the real data; without --data, random images of the
same count: speed does not depend on the pixels), alternating float32 and mixed_bfloat16 in
one process. The first epoch of each fit (tracing) is left out. --quick: 400 images, 3 epochs,
one round. Key figure, last line: the bf16 speed-up per epoch.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _common import machine, median  # noqa: E402

from allsearch.core.hardware import bf16_support  # noqa: E402
from allsearch.core.space import HParams  # noqa: E402
from allsearch.training.model import build_cnn  # noqa: E402


class EpochTimes(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.times.append(time.perf_counter() - self.started)


def seconds_per_epoch(x: np.ndarray, y: np.ndarray, precision: str, epochs: int) -> float:
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    hparams = HParams(epochs=epochs, batch_size=64, loss="categorical_crossentropy", conv_layers=3)
    model = build_cnn(hparams, y.shape[1], input_shape=x.shape[1:])
    timer = EpochTimes()
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=[timer])
    keras.mixed_precision.set_global_policy("float32")
    return float(np.mean(timer.times[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="400 images, 3 epochs, one round")
    parser.add_argument("--data", default=None, help="dataset folder (default: random images)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    rounds, epochs = (1, 3) if args.quick else (args.rounds, args.epochs)
    if args.data:
        from allsearch.data.dataset import load_dataset
        from allsearch.data.images import to_network_input

        dataset = load_dataset(args.data)
        x, labels, n_classes = (to_network_input(dataset.x_train), dataset.y_train,
                                dataset.n_classes)  # uint8 pixels -> float32 [0, 1]
    else:
        n = 400 if args.quick else 2251
        rng = np.random.default_rng(0)
        x = rng.random((n, 100, 100, 1), dtype=np.float32)
        labels, n_classes = rng.integers(0, 4, n), 4
    y = keras.utils.to_categorical(labels, n_classes)
    times: dict[str, list[float]] = {"float32": [], "bfloat16": []}
    for i in range(rounds):
        for precision in times:
            times[precision].append(seconds_per_epoch(x, y, precision, epochs))
        print(f"round {i + 1}: float32 {times['float32'][-1]:.2f} s/epoch, "
              f"bfloat16 {times['bfloat16'][-1]:.2f} s/epoch")
    print(f"machine: {machine()}; bf16 in hardware: {bf16_support() or 'no'}")
    print(f"{len(x)} training images, batch 64, paper's network, epochs 2-{epochs} of each fit")
    f32, bf16 = median(times["float32"]), median(times["bfloat16"])
    print(f"bfloat16 speed-up per epoch (median of {rounds}): {f32 / bf16:.2f}x "
          f"({f32:.2f} -> {bf16:.2f} s)")


if __name__ == "__main__":
    main()
