"""How a dataset is cut into train, val and test: labels, file names and settings in, index
arrays and the split table out.

random (the default): a stratified 70/15/15 split of the images. groups: no group (a patient,
a slide) lands in two parts; a file's group is the first capture group of --group-pattern
matched against its name, or its row in --groups FILE.csv. blocks: within each class, files in
natural name order are cut into contiguous blocks of --block-size, and whole blocks are the
groups; --embargo M leaves out the M files on each side of a boundary between two parts.
Groups are dealt to parts by scikit-learn's StratifiedGroupKFold, which keeps the class balance
as far as the groups allow: K folds, one for test, one for val, the rest for train; K is 7
(~71/14/14) where every class has 7 groups or more, else the fewest groups of a class (5: 60/20/20),
so that val and test can each hold every class; a class needs at least 3 groups.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal, get_args

import numpy as np

from allsearch.core.errors import ConfigError, DataError

__all__ = ["KINDS", "SplitKind", "FRACTIONS", "PARTS", "FIELDS", "SplitSettings", "Split",
           "split_data", "check_settings", "natural_key", "embargo_parts", "label_of"]

SplitKind = Literal["random", "groups", "blocks"]  # config.StudyConfig.split's type
KINDS: tuple[str, ...] = get_args(SplitKind)
FRACTIONS = (0.70, 0.15, 0.15)
PARTS = ("train", "val", "test")
LEFT_OUT = "embargo"  # the part of a file an embargo leaves out
# Groups are dealt into at most this many folds: 1 test, 1 val, the rest train (5/7 = 71%).
GROUP_FOLDS = 7
MIN_GROUPS_PER_CLASS = 3  # one for each part
EXAMPLES = 3  # how many offending files or groups a message names
MAX_GROUPS_FILE_BYTES = 50_000_000
# The StudyConfig fields (and run params) that make a SplitSettings, in its order.
FIELDS = ("split", "group_pattern", "groups", "block_size", "embargo")


@dataclass(frozen=True)
class SplitSettings:
    """The split settings of a study (StudyConfig's split, group_pattern, groups, block_size,
    embargo); the seed is load_dataset's split_seed."""

    kind: str = "random"
    group_pattern: str | None = None
    groups: str | None = None
    block_size: int = 0
    embargo: int = 0

    def params(self) -> dict[str, str | int]:
        """The settings that mean something for this kind, as a child run logs them."""
        if self.kind == "groups":
            key = "group_pattern" if self.group_pattern is not None else "groups"
            return {"split": "groups", key: getattr(self, key)}
        if self.kind == "blocks":
            return {"split": "blocks", "block_size": self.block_size, "embargo": self.embargo}
        return {"split": "random"}

    def label(self) -> str:
        """The split as tables show it: random, groups PATTERN (or FILE), blocks N, embargo M."""
        if self.kind == "groups":
            return f"groups {self.group_pattern if self.group_pattern is not None else self.groups}"
        if self.kind == "blocks":
            return f"blocks {self.block_size}, embargo {self.embargo}"
        return "random"

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> SplitSettings:
        """The settings a run logged as params (text in MLflow, values in a record; a run
        from before splits had a kind was split at random); a ConfigError if not a split."""
        def value(name: str) -> Any:
            found = params.get(name)
            missing = found is None or found in ("None", "") or found != found  # NaN: not logged
            return None if missing else found

        try:
            split = cls(str(value("split") or "random"), value("group_pattern"), value("groups"),
                        int(value("block_size") or 0), int(value("embargo") or 0))
        except (TypeError, ValueError):
            shown = {k: params.get(k) for k in FIELDS}
            raise ConfigError(f"the split settings {shown} are not a split") from None
        check_settings(split.kind, split.group_pattern, split.groups, split.block_size,
                       split.embargo)
        return split


def check_settings(kind: str, group_pattern: str | None, groups: str | None, block_size: int,
                   embargo: int) -> None:
    """ConfigError unless the split settings fit together (config.StudyConfig.validate)."""
    if kind not in KINDS:
        raise ConfigError(f"--split must be one of {list(KINDS)}, got {kind!r}")
    if kind == "groups" and (group_pattern is None) == (groups is None):
        raise ConfigError("--split groups needs one of --group-pattern REGEX (e.g. "
                          "'^(P\\d+)_') or --groups FILE.csv (columns file,group)")
    if kind != "groups" and (group_pattern is not None or groups is not None):
        raise ConfigError(f"--group-pattern and --groups go with --split groups, not "
                          f"--split {kind}")
    if group_pattern is not None:
        try:
            compiled = re.compile(group_pattern)
        except re.error as exc:
            raise ConfigError(f"--group-pattern '{group_pattern}' is not a regular expression "
                              f"({exc}); e.g. '^(P\\d+)_'") from None
        if compiled.groups < 1:
            raise ConfigError(f"--group-pattern '{group_pattern}' has no capture group; put the "
                              f"group id in parentheses, e.g. '^(P\\d+)_'")
    for name, value in (("block_size", block_size), ("embargo", embargo)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be 0 or a positive integer, "
                              f"got {value!r}")
    if kind == "blocks" and block_size < 1:
        raise ConfigError("--split blocks needs --block-size N (files per block, N >= 1)")
    if kind != "blocks" and (block_size or embargo):
        raise ConfigError(f"--block-size and --embargo go with --split blocks, not --split {kind}")
    if kind == "blocks" and 2 * embargo >= block_size:
        raise ConfigError(f"--embargo {embargo} leaves out {2 * embargo} files around a "
                          f"boundary, a whole block of --block-size {block_size}; use an "
                          f"embargo under half the block size")


@dataclass(frozen=True)
class Split:
    """Index arrays (sorted) into the images, and the table of every image: (file, class,
    group, part), part one of train, val, test or embargo (left out)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    table: tuple[tuple[str, str, str, str], ...]
    digest: str  # of the groups, for the dataset fingerprint ("" for a random split)

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(("file", "class", "group", "part"))
        writer.writerows(self.table)
        return out.getvalue()


def split_data(labels: np.ndarray, files: tuple[str, ...], class_names: tuple[str, ...],
               settings: SplitSettings, seed: int) -> Split:
    """The split of one dataset (see the module docstring), deterministic for a seed."""
    if settings.kind == "random":
        parts = _random_parts(labels, seed)
        groups = [""] * len(files)
        digest = ""
    else:
        groups = _groups(labels, files, settings)
        parts = _group_parts(labels, files, groups, class_names, settings, seed)
        digest = hashlib.sha256("\n".join(groups).encode()).hexdigest()[:16]
    table = tuple((f, class_names[int(y)], g, PARTS[p] if p >= 0 else LEFT_OUT)
                  for f, y, g, p in zip(files, labels, groups, parts, strict=True))
    train, val, test = (np.flatnonzero(parts == i) for i in range(3))
    return Split(train, val, test, table, digest)


def label_of(params: Mapping[str, Any]) -> str:
    """The label (SplitSettings.label) of the split a run logged; its `split` param as it is
    where the params are not a split."""
    try:
        return SplitSettings.from_params(params).label()
    except ConfigError:
        return str(params.get("split"))


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """A sort key that puts img2 before img10."""
    return tuple((0, int(t)) if t.isdigit() else (1, t.lower())
                 for t in re.split(r"(\d+)", name) if t)


# --------------------------------------------------------------------------- random


def _random_parts(labels: np.ndarray, seed: int) -> np.ndarray:
    """Stratified 70/15/15, as a part number (0, 1, 2) per image."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    # An exact count: 1 - 0.7 in floating point is 0.30000000000000004, one image too many.
    n_train = int(round(FRACTIONS[0] * len(labels)))
    _, rest = train_test_split(index, train_size=n_train, random_state=seed, stratify=labels)
    val_share = FRACTIONS[1] / (FRACTIONS[1] + FRACTIONS[2])
    val, test = train_test_split(rest, train_size=val_share, random_state=seed,
                                 stratify=labels[rest])
    parts = np.zeros(len(labels), dtype=np.int64)
    parts[val], parts[test] = 1, 2
    return parts


# --------------------------------------------------------------------------- groups


def _groups(labels: np.ndarray, files: tuple[str, ...], settings: SplitSettings) -> list[str]:
    if settings.kind == "blocks":
        return _blocks(labels, files, settings.block_size)
    if settings.group_pattern is not None:
        pattern = re.compile(settings.group_pattern)
        found = [pattern.search(PurePosixPath(f).name) for f in files]
        missed = [f for f, m in zip(files, found, strict=True) if m is None or not m.group(1)]
        if missed:
            raise DataError(f"--group-pattern '{settings.group_pattern}' does not match "
                            f"{len(missed)} file name(s), e.g. {', '.join(missed[:EXAMPLES])}; "
                            f"fix the pattern, or name each file's group in --groups FILE.csv")
        return [m.group(1) for m in found if m is not None]  # each one, by `missed`
    assert settings.groups is not None
    return _groups_from_file(Path(settings.groups), files)


def _groups_from_file(path: Path, files: tuple[str, ...]) -> list[str]:
    """Each file's group from a CSV with columns file,group; `file` is the path inside the
    dataset folder (Benign/P01_1.png) or the bare file name."""
    try:
        if path.stat().st_size > MAX_GROUPS_FILE_BYTES:
            raise DataError(f"--groups {path} is over {MAX_GROUPS_FILE_BYTES // 1_000_000} MB; "
                            f"a groups file has one short line per image")
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read --groups {path} ({type(exc).__name__}); give a UTF-8 "
                        f"CSV file with columns file,group") from None
    rows = csv.DictReader(io.StringIO(text))
    if not {"file", "group"} <= set(rows.fieldnames or ()):
        raise DataError(f"--groups {path} needs a header with columns file,group; got "
                        f"{rows.fieldnames}")
    mapping = {(row["file"] or "").strip(): (row["group"] or "").strip() for row in rows}
    found = [mapping.get(f) or mapping.get(PurePosixPath(f).name) for f in files]
    missed = [f for f, g in zip(files, found, strict=True) if not g]
    if missed:
        raise DataError(f"--groups {path} gives no group for {len(missed)} file(s), e.g. "
                        f"{', '.join(missed[:EXAMPLES])}; add a row file,group for each")
    return [g for g in found if g]  # each one, by `missed`


def _blocks(labels: np.ndarray, files: tuple[str, ...], block_size: int) -> list[str]:
    """Within each class, files in natural name order cut into blocks of `block_size`."""
    groups = [""] * len(files)
    for label in np.unique(labels):
        members = sorted(np.flatnonzero(labels == label), key=lambda i: natural_key(files[i]))
        for rank, i in enumerate(members):
            groups[i] = f"{PurePosixPath(files[i]).parts[0]}#block{rank // block_size + 1}"
    return groups


def _group_parts(labels: np.ndarray, files: tuple[str, ...], groups: list[str],
                 class_names: tuple[str, ...], settings: SplitSettings, seed: int) -> np.ndarray:
    """Part numbers (0 train, 1 val, 2 test, -1 left out) with whole groups per part: the
    first pair of StratifiedGroupKFold folds (test, val) that leaves every class in every
    part (after the embargo)."""
    from sklearn.model_selection import StratifiedGroupKFold

    names, codes = np.unique(np.array(groups, dtype=str), return_inverse=True)
    n_folds = min(GROUP_FOLDS, _fewest_groups(labels, codes, names, class_names, settings))
    kfold = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "least populated class has fewer than n_splits"
        folds = [test for _, test in kfold.split(np.zeros(len(labels)), labels, codes)]
    n_classes = len(np.unique(labels))
    for t in range(n_folds):
        for v in range(n_folds):
            if v == t:
                continue
            parts = np.zeros(len(labels), dtype=np.int64)
            parts[folds[v]], parts[folds[t]] = 1, 2
            if settings.embargo:
                parts = embargo_parts(parts, labels, files, settings.embargo)
            if all(len(np.unique(labels[parts == p])) == n_classes for p in range(3)):
                return parts
    raise DataError(f"--split {settings.kind}: no way of dealing the {len(names)} groups into "
                    f"train, val and test gives every part every class"
                    f"{' after the embargo' if settings.embargo else ''}; add groups, "
                    f"{'lower --embargo or --block-size' if settings.kind == 'blocks' else 'split groups that mix classes'}, "
                    f"or use --split random")


def _fewest_groups(labels: np.ndarray, codes: np.ndarray, names: np.ndarray,
                   class_names: tuple[str, ...], settings: SplitSettings) -> int:
    """The fewest groups any class has images of; a DataError under MIN_GROUPS_PER_CLASS."""
    way_out = ("lower --block-size" if settings.kind == "blocks"
               else "add images of more groups (patients)")
    fewest = len(names)
    for label in np.unique(labels):
        held = names[np.unique(codes[labels == label])]
        fewest = min(fewest, len(held))
        if len(held) < MIN_GROUPS_PER_CLASS:
            raise DataError(f"--split {settings.kind}: class '{class_names[int(label)]}' has "
                            f"images of {len(held)} group(s) ({', '.join(held[:EXAMPLES])}); "
                            f"train, val and test each need one of its groups, so at least "
                            f"{MIN_GROUPS_PER_CLASS}; {way_out}, or use --split random")
    return fewest


def embargo_parts(parts: np.ndarray, labels: np.ndarray, files: tuple[str, ...], embargo: int
             ) -> np.ndarray:
    """`parts` with the `embargo` files on each side of every boundary between two parts
    (within a class, in natural name order, the order the blocks were cut in) marked -1."""
    out = parts.copy()
    for label in np.unique(labels):
        order = np.array(sorted(np.flatnonzero(labels == label),
                                key=lambda i: natural_key(files[i])))
        seq = parts[order]
        for b in np.flatnonzero(seq[1:] != seq[:-1]) + 1:  # b: first file after a boundary
            out[order[max(0, b - embargo): b + embargo]] = -1
    return out
