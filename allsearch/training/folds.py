"""Cross-validation of one configuration over K folds of a split's non-test part (--cv K).

The train and val parts of a split (its non-test part; files an embargo left out stay out)
are dealt into K folds; fold k validates on its k-th part and trains on the others, and the
test part is in no fold. Folds keep the split's groups whole: after a split by groups or
blocks no group (patient, block) is in two folds (scikit-learn's StratifiedGroupKFold with the
split's groups), and a split's --embargo M leaves out, in each fold, the M files on each side
of a boundary between its training and validation blocks (allsearch.core.splits.embargo_parts);
after a random split the images are dealt by StratifiedKFold. Folds are seeded by the split
seed, so the same data, split and K give the same folds in every process.

A trial under --cv trains its configuration once per fold (tracked.run_tracked with a
CrossValidation): each fold's figures are logged on the trial's run as it ends
(`fold_val_accuracy`, `fold_test_accuracy`, step = fold), a pruner hears the running mean of
the validation accuracies after each fold, and the run's final metrics are the means over the
folds (`*_sd`: their spread). The objective is the mean validation accuracy. The run's model
and its test figures and tables (confusion matrix, per-class report, predictions) are fold
0's: no model is trained again on the whole non-test part, which would leave no validation
part for early stopping and cost one more training per trial; `test_accuracy` is the mean of
the K fold models' accuracies on the untouched test part.
"""

from __future__ import annotations

import csv
import hashlib
import io
import statistics
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from allsearch.core.errors import DataError
from allsearch.core.hardware import deferred_interrupts
from allsearch.core.splits import EXAMPLES, embargo_parts
from allsearch.data.dataset import Dataset
from allsearch.data.rows import concat_rows, take_rows
from allsearch.training.results import TrialResult, aggregate

__all__ = ["Folds", "make_folds", "fold_dataset", "CrossValidation", "FOLD_METRICS"]

# Metrics of each fold on a trial's run, at step = the fold's index (docs/design.md).
FOLD_METRICS = ("fold_val_accuracy", "fold_test_accuracy")


@dataclass(frozen=True)
class Folds:
    """The K folds of a dataset's non-test part: for each of its files (train files, then val
    files, as the dataset holds them) the fold whose validation part holds it, and per fold a
    part per file (0 train, 1 val, -1 left out by the embargo)."""

    k: int
    class_names: tuple[str, ...]
    files: tuple[str, ...]
    labels: np.ndarray
    groups: tuple[str, ...]
    fold: np.ndarray  # (n,)
    parts: np.ndarray  # (k, n)

    def csv(self) -> str:
        """folds.csv: file, class, group, fold (the one it validates in), left_out (the folds
        whose embargo leaves it out, `;`-separated)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(("file", "class", "group", "fold", "left_out"))
        for i, (name, group) in enumerate(zip(self.files, self.groups, strict=True)):
            left = ";".join(str(f) for f in range(self.k) if self.parts[f, i] < 0)
            writer.writerow((name, self.class_names[int(self.labels[i])], group,
                             int(self.fold[i]), left))
        return out.getvalue()


def make_folds(dataset: Dataset, k: int) -> Folds:
    """The dataset's K folds (see the module docstring); a DataError, in one line, where a
    class has fewer groups (or images) than folds outside the test part, or a fold would lack
    a class after the embargo."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    files = tuple(dataset.files_train) + tuple(dataset.files_val)
    labels = np.concatenate([dataset.y_train, dataset.y_val]).astype(np.int64)
    settings = dataset.split_settings
    group_of = ({row[0]: row[2] for row in dataset.split_table.table}
                if dataset.split_table is not None else {})
    groups = tuple(group_of.get(f, "") for f in files)
    grouped = settings.kind != "random"
    _check_enough(dataset, labels, groups if grouped else files, k, grouped)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "least populated class": checked above, in words
        if grouped:
            codes = np.unique(np.array(groups, dtype=str), return_inverse=True)[1]
            dealt = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=dataset.split_seed
                                         ).split(np.zeros(len(files)), labels, codes)
        else:
            dealt = StratifiedKFold(n_splits=k, shuffle=True, random_state=dataset.split_seed
                                    ).split(np.zeros(len(files)), labels)
        fold = np.empty(len(files), dtype=np.int64)
        for index, (_, val) in enumerate(dealt):
            fold[val] = index
    parts = np.stack([(fold == f).astype(np.int64) for f in range(k)])
    if settings.kind == "blocks" and settings.embargo:
        parts = np.stack([embargo_parts(p, labels, files, settings.embargo) for p in parts])
    _check_every_class(dataset, labels, parts, k)
    return Folds(k, dataset.class_names, files, labels, groups, fold, parts)


def _check_enough(dataset: Dataset, labels: np.ndarray, units: Sequence[str], k: int,
                  grouped: bool) -> None:
    """Every class needs a group (an image, after a random split) in each fold's validation
    part: at least K of them outside the test part."""
    what = "group(s)" if grouped else "image(s)"
    for label in np.unique(labels):
        held = sorted({units[int(i)] for i in np.flatnonzero(labels == label)})
        if len(held) < k:
            more = ", ..." if len(held) > EXAMPLES else ""
            shown = f" ({', '.join(held[:EXAMPLES])}{more})" if grouped else ""
            raise DataError(
                f"--cv {k}: class '{dataset.class_names[int(label)]}' has {len(held)} {what}"
                f"{shown} outside the test part, and each of the {k} folds needs one in its "
                f"validation part; use --cv {max(2, len(held))} or fewer folds, or add "
                f"{'groups' if grouped else 'images'}")


def _check_every_class(dataset: Dataset, labels: np.ndarray, parts: np.ndarray, k: int) -> None:
    """Each fold trains and validates on every class (the embargo can take a class's last
    files of a part)."""
    classes = set(np.unique(labels).tolist())
    for f in range(k):
        for part, name in ((0, "training"), (1, "validation")):
            missing = sorted(classes - set(labels[parts[f] == part].tolist()))
            if missing:
                raise DataError(
                    f"--cv {k}: fold {f}'s {name} part has no image of class "
                    f"'{dataset.class_names[missing[0]]}' after the embargo; use fewer "
                    f"folds, a smaller --embargo or --block-size")


def fold_dataset(dataset: Dataset, folds: Folds, index: int, *,
                 pool: Any = None) -> Dataset:
    """Fold `index` as a Dataset: its train and val parts, the split's test part; its own
    fingerprint, and the HOG/PCA features fitted again on its train part where the dataset
    has them. `pool`: the dataset's train and val images, one after the other (made when
    absent; Rows of the pixel cache stay unread: rows.concat_rows)."""
    x = concat_rows(dataset.x_train, dataset.x_val) if pool is None else pool
    files = np.array(folds.files, dtype=object)
    train, val = (np.flatnonzero(folds.parts[index] == p) for p in (0, 1))
    fingerprint = hashlib.sha256(
        f"{dataset.fingerprint}|cv={folds.k}|fold={index}".encode()).hexdigest()[:16]
    fold = replace(dataset, x_train=take_rows(x, train), y_train=folds.labels[train],
                   x_val=take_rows(x, val),
                   y_val=folds.labels[val], files_train=tuple(files[train]),
                   files_val=tuple(files[val]), fingerprint=fingerprint, features=None)
    if dataset.features is not None:
        from allsearch.data.features import add_hog_pca

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the study said what PCA could not give once
            fold = add_hog_pca(fold, n_components=dataset.features.n_components)
    return fold


@dataclass
class CrossValidation:
    """What tracked.run_tracked needs to train one configuration over the folds: the fold
    datasets (made one at a time), and after each fold its figures on the run and the running
    mean to `report` (fold, mean, last), which may stop the trial (a pruner)."""

    dataset: Dataset
    folds: Folds
    report: Callable[[int, float, bool], None] | None = None

    @property
    def k(self) -> int:
        return self.folds.k

    def datasets(self) -> Iterator[Dataset]:
        pool = concat_rows(self.dataset.x_train, self.dataset.x_val)
        for index in range(self.k):
            yield fold_dataset(self.dataset, self.folds, index, pool=pool)

    def after_fold(self, run: Any, results: Sequence[TrialResult]) -> None:
        """Log the fold that just ended (results[-1]) and report the running mean."""
        index, result = len(results) - 1, results[-1]
        with deferred_interrupts():  # written whole
            run.store.log_metrics(run.run_id, dict(zip(
                FOLD_METRICS, (result.val_accuracy, result.test_accuracy), strict=True)),
                step=index)
            if self.report is not None:
                mean = statistics.fmean(r.val_accuracy for r in results)
                self.report(index, mean, index == self.k - 1)

    def metrics(self, results: Sequence[TrialResult]) -> dict[str, float]:
        """The run's final metrics: the means over the folds, `*_sd` their spread (no
        `repeats`: the folds are one seed's)."""
        metrics = aggregate(results)
        metrics.pop("repeats", None)
        return metrics
