"""A split's images as rows of one array held elsewhere (a memory-mapped pixel cache), read
when asked for: `Rows`. A dataset whose pixels stream from disk (`--pixels disk`) has Rows for
its splits instead of arrays; everything that takes a split (batches, HOG features, folds,
evaluation) reads it a batch or a chunk at a time, so only those rows are ever copied.

A dataset in memory is one array instead, reordered in place (`permute_rows`) so that its
splits are views of it.

`Rows` answers what those readers ask of an array (len, shape, dtype, slicing and indexing,
which return plain arrays) and becomes a whole array only where one is asked for
(`np.asarray`). `take_rows` and `concat_rows` select and join rows without reading them,
for arrays and Rows alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["Rows", "take_rows", "concat_rows", "is_streamed", "permute_rows"]


class Rows:
    """The rows `index` of `base` (an (N, ...) array, usually a read-only np.memmap), in
    that order. Indexing reads them: `rows[i:j]`, `rows[array]` -> np.ndarray."""

    def __init__(self, base: np.ndarray, index: Any) -> None:
        self.base = base
        self.index = np.asarray(index, dtype=np.intp).reshape(-1)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index), *self.base.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.base.dtype

    @property
    def ndim(self) -> int:
        return self.base.ndim

    @property
    def nbytes(self) -> int:
        """What the rows would take as an array (none of it is held)."""
        return len(self.index) * (self.base.nbytes // max(1, len(self.base)))

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, tuple):  # rows first, then within each row
            picked, inner = self.index[key[0]], key[1:]
            return self[key[0]][inner if np.ndim(picked) == 0 else (slice(None), *inner)]
        picked = self.index[key]
        if np.ndim(picked) == 0:
            return np.array(self.base[int(picked)])  # a copy: nothing points into the map
        return _gather(self.base, picked)

    def take(self, rows: Any) -> Rows:
        """These of the rows, still unread."""
        return Rows(self.base, self.index[rows])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = _gather(self.base, self.index)
        return whole if dtype is None else whole.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"Rows({len(self.index)} of {self.base.shape[0]} rows of {self.base.shape[1:]} {self.dtype})"


def _gather(base: np.ndarray, index: np.ndarray) -> np.ndarray:
    """base[index], read in the file's order (a memory map is read front to back, which a
    disk serves far faster than jumps), put back in the order asked for."""
    order = np.argsort(index, kind="stable")
    out = np.empty((len(index), *base.shape[1:]), base.dtype)
    out[order] = base[index[order]]
    return out


def take_rows(images: Any, rows: Any) -> Any:
    """images[rows] for an array; for Rows, those rows still unread."""
    return images.take(rows) if isinstance(images, Rows) else images[rows]


def concat_rows(*parts: Any) -> Any:
    """The parts one after another: Rows of one base stay unread, arrays are concatenated."""
    if all(isinstance(p, Rows) for p in parts) and len({id(p.base) for p in parts}) == 1:
        return Rows(parts[0].base, np.concatenate([p.index for p in parts]))
    return np.concatenate([np.asarray(p) for p in parts])


def is_streamed(images: Any) -> bool:
    """Whether these images are read from disk as they are used (Rows)."""
    return isinstance(images, Rows)


def permute_rows(array: np.ndarray, order: np.ndarray) -> None:
    """array[:] = array[order] in place, for a permutation `order`, with one row of extra
    memory (array[order] would hold a second copy of every image): cycle by cycle."""
    done = np.zeros(len(order), dtype=bool)
    for start in np.flatnonzero(order != np.arange(len(order))):
        if done[start]:
            continue
        first, i = array[start].copy(), int(start)
        while True:
            done[i] = True
            j = int(order[i])
            if j == start:
                array[i] = first
                break
            array[i] = array[j]
            i = j
