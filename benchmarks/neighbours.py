"""How alike are files that sit close in name order? The reasoning behind --split blocks'
block size and embargo, measured on the dataset itself.

    python benchmarks/neighbours.py [--quick] [--data FOLDER ...] [--pairs 20000]

Within each class, files in natural name order (the order --split blocks cuts), exact
duplicates dropped (as the pipeline drops them), decoded as the pipeline decodes them but to
32x32 grayscale thumbnails. For the pairs of files d apart in that order and for random pairs
of the same class, three figures:

- `near copies`: the share of pairs whose RMS pixel difference is under a quarter of the
  class's median for random pairs (the same field captured twice, nearly);
- `pixel r`: the mean correlation of the two thumbnails' pixels (the layout of the field);
- `histogram`: the mean L1 distance of their 16-bin intensity histograms (brightness, contrast,
  stain: the look of a capture session), as a ratio to random pairs' (1.00: no more alike than
  any two files of the class; lower: more alike).

Suggested embargo: --embargo M leaves out M files on each side of a boundary, which parts
every pair at most 2M apart, so M = ceil(G / 2) for G the largest distance (of 1 to 20) at
which near copies are found. Suggested block size: the distance from which the histogram ratio
stays at the random-pair level (>= 0.90: within 10% of random pairs), capped so that the
smallest class still has 5 blocks (one each for val and test, three for train). Classes are
pooled by weighting each class's ratio by its number of pairs.

--data defaults to ../shared/data/leukemia/{Original,Segmented} (the team copy); a folder that
is not there is skipped with a message. --quick: fewer random pairs, distances up to 50, and
synthetic images in capture order (a drifting session brightness and a re-captured copy every
40 files) where the real data is absent. Key figure, last line: the suggestion.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np
from _common import REPO, machine

from allsearch.core.splits import natural_key
from allsearch.data.images import IMAGE_EXTENSIONS, decode_file

DISTANCES = (1, 2, 3, 5, 10, 20, 50, 100, 200, 300)
QUICK_DISTANCES = (1, 2, 3, 5, 10, 20, 50)
NEAR_R = 0.9  # a pair whose thumbnails' pixels correlate this much is a near copy
NEAR_SHARE = 0.9  # the embargo parts this share of the near copies
RANDOM_LEVEL = 0.90  # a histogram ratio at or above this is the random-pair level
NEAR_GAPS_SHOWN = 10  # near copies are counted per distance up to this
MIN_BLOCKS = 5  # blocks of the smallest class: val, test, three for train
THUMB = 32
BINS = 16
DEFAULT_DATA = REPO.parent / "shared" / "data" / "leukemia"


def thumbnails(folder: Path) -> list[np.ndarray]:
    """Per class (sorted), its files' thumbnails in natural name order, exact duplicates
    dropped; (n, 32*32) floats in [0, 1]."""
    classes = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted((p for p in class_dir.iterdir()
                        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                        and not p.name.startswith(".")), key=lambda p: natural_key(p.name))
        seen: set[str] = set()
        rows = []
        for path in files:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)
            pixels = decode_file(path, THUMB)
            if not isinstance(pixels, str):  # a file the pipeline cannot decode is skipped
                rows.append(pixels.astype(np.float32).ravel() / 255.0)
        classes.append(np.stack(rows))
    return classes


def figures(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pixel correlation, histogram distance) of every pair of one class's thumbnails, as
    (n, n) matrices."""
    centred = images - images.mean(1, keepdims=True)
    z = centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-9)
    hist = np.stack([np.histogram(r, bins=BINS, range=(0.0, 1.0))[0] / r.size for r in images])
    distance = np.zeros((len(images), len(images)))
    for k in range(BINS):
        distance += np.abs(hist[:, k, None] - hist[None, :, k])
    return z @ z.T, distance


def measure(classes: list[np.ndarray], distances: tuple[int, ...]) -> dict[str, object]:
    """Per distance (and 'random': every pair of a class): the near-copy share, the pixel r
    and the histogram ratio, pooled over the classes; how far apart the near copies are."""
    rows: dict[object, dict[str, list[tuple[float, int]]]] = {}
    gaps: list[int] = []
    for images in classes:
        n = len(images)
        r, hist = figures(images)
        upper = np.triu_indices(n, 1)
        random_hist = float(hist[upper].mean())
        gaps += (upper[1] - upper[0])[r[upper] >= NEAR_R].tolist()
        picks = [("random", r[upper], hist[upper])] + [
            (d, np.diagonal(r, d), np.diagonal(hist, d)) for d in distances if d < n]
        for key, pixel_r, hist_d in picks:
            row = rows.setdefault(key, {"near": [], "r": [], "hist": []})
            row["near"].append((float((pixel_r >= NEAR_R).mean()), len(pixel_r)))
            row["r"].append((float(pixel_r.mean()), len(pixel_r)))
            row["hist"].append((float(hist_d.mean()) / random_hist, len(pixel_r)))
    pooled = {key: {name: sum(v * w for v, w in values) / sum(w for _, w in values)
                    for name, values in row.items()} for key, row in rows.items()}
    return {"rows": pooled, "gaps": sorted(gaps), "smallest": min(len(c) for c in classes),
            "n": sum(len(c) for c in classes)}


def suggest(result: dict[str, object]) -> tuple[int, int, int]:
    """(distance at which the histogram ratio reaches the random-pair level, block size,
    embargo); see the module docstring."""
    rows = result["rows"]
    distances = sorted(k for k in rows if k != "random")  # type: ignore[union-attr]
    reach = next((d for k, d in enumerate(distances)
                  if all(rows[e]["hist"] >= RANDOM_LEVEL for e in distances[k:])),  # type: ignore[index]
                 distances[-1])
    cap = max(1, int(result["smallest"]) // MIN_BLOCKS)  # type: ignore[call-overload]
    gaps = result["gaps"]
    # The distance within which NEAR_SHARE of the near copies lie (0: none found).
    covered = gaps[max(0, math.ceil(NEAR_SHARE * len(gaps)) - 1)] if gaps else 0  # type: ignore[index,arg-type]
    embargo = math.ceil(covered / 2)
    block = max(min(reach, cap), 2 * embargo + 1)
    return reach, block, embargo


def synthetic(root: Path, per_class: int = 240) -> Path:
    """Images in capture order: a session brightness that drifts slowly with the file number,
    random cells, and every 40th file a near copy of the one before."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, name in enumerate(("Benign", "Early", "Pre")):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        previous = None
        for i in range(1, per_class + 1):
            level = 120 + 60 * math.sin(i / 30 + label)
            image = np.clip(rng.normal(level, 12, (64, 64)), 0, 255)
            for _ in range(6):
                r, c = rng.integers(8, 56, 2)
                image[r - 6:r + 6, c - 6:c + 6] = 40
            if i % 40 == 0 and previous is not None:
                image = np.clip(previous + rng.normal(0, 2, previous.shape), 0, 255)
            previous = image
            Image.fromarray(image.astype(np.uint8)).save(folder / f"img-{i}.png")
    return root


def table(name: str, result: dict[str, object]) -> str:
    rows = result["rows"]
    keys = [k for k in rows if k != "random"] + ["random"]  # type: ignore[union-attr]
    lines = [f"{name}: {result['n']} files (exact duplicates dropped), smallest class "
             f"{result['smallest']}",
             "| distance | near copies | pixel r | histogram (ratio to random) |",
             "|---|---|---|---|"]
    for key in keys:
        row = rows[key]  # type: ignore[index]
        lines.append(f"| {key} | {100 * row['near']:.2f}% | {row['r']:.3f} | {row['hist']:.2f} |")
    reach, block, embargo = suggest(result)
    gaps = result["gaps"]
    counts = np.bincount(np.minimum(gaps, NEAR_GAPS_SHOWN + 1))  # type: ignore[call-overload]
    shown = ", ".join(f"{g}: {c}" for g, c in enumerate(counts[:NEAR_GAPS_SHOWN + 1]) if c)
    beyond = f", farther: {counts[NEAR_GAPS_SHOWN + 1]} ({', '.join(str(g) for g in gaps if g > NEAR_GAPS_SHOWN)})" \
        if len(counts) > NEAR_GAPS_SHOWN + 1 else ""
    lines.append(f"near copies (pixel r >= {NEAR_R}): {len(gaps)} pairs; by distance "  # type: ignore[arg-type]
                 f"{shown or 'none'}{beyond}")
    lines.append(f"histogram at the random-pair level from distance {reach}: --block-size "
                 f"{block} --embargo {embargo}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer pairs and distances; synthetic images where the data is absent")
    parser.add_argument("--data", nargs="+", default=None,
                        help="dataset folders (default: the team copy's Original and Segmented)")
    args = parser.parse_args()
    folders = ([Path(d) for d in args.data] if args.data
               else [DEFAULT_DATA / "Original", DEFAULT_DATA / "Segmented"])
    present = [f for f in folders if f.is_dir()]
    for folder in sorted(set(folders) - set(present)):
        print(f"skipped {folder}: not here (the real dataset is never shipped)", file=sys.stderr)
    if not present:
        if not args.quick:
            print("no dataset folder here; nothing measured (--quick measures synthetic images)")
            return
        present = [synthetic(Path(tempfile.mkdtemp(prefix="allsearch-neighbours-")) / "synthetic")]
    distances = QUICK_DISTANCES if args.quick else DISTANCES
    print(f"{date.today().isoformat()}; {machine()}")
    suggestions = []
    for folder in present:
        result = measure(thumbnails(folder), distances)
        print(table(folder.name, result) + "\n")
        suggestions.append(suggest(result))
    # One setting for every variant: the largest of each (the variants share files and order).
    reach, block, embargo = (max(s[i] for s in suggestions) for i in range(3))
    print(f"suggested --split blocks --block-size {block} --embargo {embargo} "
          f"(histogram at the random-pair level from distance {reach})")


if __name__ == "__main__":
    main()
