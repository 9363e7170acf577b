"""A folder of class folders -> its image files, class by class in name order, and every
other file with the reason it is left out (hidden, not an image, outside any class folder)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from allsearch.core.errors import DataError
from allsearch.data.images import IMAGE_EXTENSIONS

__all__ = ["Listing", "discover", "hash_file"]


@dataclass
class Listing:
    class_names: tuple[str, ...]
    files: list[tuple[str, int]]  # (relative path, class index), sorted
    skipped: list[tuple[str, str]]


def discover(root: Path) -> Listing:
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    skipped: list[tuple[str, str]] = []
    for p in sorted(root.iterdir()):
        if p.is_file():
            skipped.append((p.name, "file outside any class folder"))
    if not class_dirs:
        raise DataError(f"'{root}' has no class folders; a dataset is a folder with one "
                        f"sub-folder of images per class (e.g. Benign/, Early/, Pre/, Pro/)")
    files: list[tuple[str, int]] = []
    names: list[str] = []
    for class_dir in class_dirs:
        members: list[str] = []
        for p in sorted(class_dir.rglob("*")):
            rel = p.relative_to(root).as_posix()
            if any(part.startswith(".") for part in p.relative_to(class_dir).parts):
                if p.is_file():
                    skipped.append((rel, "hidden file"))
                continue
            if not p.is_file():
                continue
            if p.suffix.lower() not in IMAGE_EXTENSIONS:
                skipped.append((rel, f"not an image ({p.suffix or 'no extension'})"))
                continue
            members.append(rel)
        names.append(class_dir.name)
        files.extend((rel, len(names) - 1) for rel in members)
    return Listing(tuple(names), files, skipped)


def hash_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
