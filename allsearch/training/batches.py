"""A split fed to the network a batch at a time: its uint8 pixels become float32 in [0, 1]
batch by batch (allsearch.data.images.as_network_input), so no split is ever held as float32,
four times the memory of its pixels. The network sees the very values a conversion of the
whole split gives.

`Batches` is a keras.utils.PyDataset of one split's inputs (an array, or the dict a 'both'
network takes) and its one-hot labels; given a seed, it draws a new order of the images every
epoch (training), else it keeps their order (validation, prediction). Where a pass has 16
batches or more, two threads prepare the next batches while the network trains (Keras'
enqueuer, stopped at each epoch's end before the next order is drawn): batch by batch in one
thread, the paper's network trained 20 % fewer images per second than from float32 arrays
(benchmarks/throughput.py, 3 rounds); with two, within 3 % (2 rounds). On a tiny set the
threads cost more than they save (a 3-trial study of 48 images: 17.4 s with one thread, 19.2 s
with two, medians of 3 alternating runs).
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

from allsearch.data.images import as_network_input

__all__ = ["Batches", "network_batch", "count", "PREFETCH_FROM"]

PREFETCH_FROM = 16  # batches in a pass from which two threads prepare them


def network_batch(inputs: Any, rows: slice | np.ndarray) -> Any:
    """These rows of the inputs (an array or a dict of arrays), as the network takes them."""
    if isinstance(inputs, dict):
        return {name: as_network_input(value[rows]) for name, value in inputs.items()}
    return as_network_input(inputs[rows])


def count(inputs: Any) -> int:
    """How many images the inputs (an array or a dict of arrays) hold."""
    return len(next(iter(inputs.values())) if isinstance(inputs, dict) else inputs)


class Batches(keras.utils.PyDataset):
    """(inputs, labels) batch by batch, or (inputs,) without labels (prediction)."""

    def __init__(self, inputs: Any, labels: np.ndarray | None = None, *, batch_size: int,
                 seed: int | None = None) -> None:
        self.inputs, self.labels, self.batch_size = inputs, labels, int(batch_size)
        self.n = count(inputs)
        # Two threads prepare the next batches where an epoch has enough of them to pay for
        # starting the threads (about 0.2 s per fit or predict call, measured on tiny sets).
        super().__init__(workers=2 if len(self) >= PREFETCH_FROM else 1, max_queue_size=4)
        self._rng = None if seed is None else np.random.default_rng(seed)
        self._order: np.ndarray | None = None
        self.on_epoch_end()

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        start = index * self.batch_size
        rows: slice | np.ndarray = (slice(start, start + self.batch_size) if self._order is None
                                    else self._order[start:start + self.batch_size])
        x = network_batch(self.inputs, rows)
        return (x,) if self.labels is None else (x, self.labels[rows])

    def on_epoch_end(self) -> None:
        if self._rng is not None:  # the next epoch's order of the images
            self._order = self._rng.permutation(self.n)
