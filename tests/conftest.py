"""Shared fixtures: tiny synthetic datasets written to temporary folders, isolated stores."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "leukemia"
CLASSES = ("Benign", "Early", "Pre", "Pro")


def make_image(label: int, index: int, size: int = 48) -> np.ndarray:
    """A grayscale image whose bright blob sits in the quadrant of its class, plus noise."""
    rng = np.random.default_rng(1000 * label + index)
    image = rng.integers(0, 60, (size, size)).astype(np.uint8)
    half = size // 2
    row, col = divmod(label % 4, 2)
    image[row * half + 4: row * half + half - 4, col * half + 4: col * half + half - 4] += 150
    return image


def write_dataset(root: Path, *, per_class: int = 12, classes: tuple[str, ...] = CLASSES,
                  duplicate: bool = True, junk: bool = True) -> Path:
    for label, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(make_image(label, i)).save(folder / f"{name}_{i:03d}.png")
    if duplicate:  # an exact copy under another name, as in the real Pro class
        first = root / classes[-1] / f"{classes[-1]}_000.png"
        (root / classes[-1] / "copy_of_000.png").write_bytes(first.read_bytes())
    if junk:
        (root / classes[0] / "notes.txt").write_text("not an image")
        (root / classes[0] / ".DS_Store").write_bytes(b"\0\1")
    return root


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    """4 classes x 12 images (48x48 PNG), one duplicate pair, one text and one hidden file."""
    return write_dataset(tmp_path / "tiny")


@pytest.fixture(autouse=True)
def isolated_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own cache and MLflow/Optuna store, and runs in a temporary cwd."""
    store = tmp_path / "mlruns"
    monkeypatch.setenv("ALLSEARCH_CACHE_DIR", str(store / "cache"))
    monkeypatch.setenv("ALLSEARCH_ARTIFACT_ROOT", str(store / "artifacts"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    warnings.filterwarnings("ignore", category=FutureWarning)
    return store


@pytest.fixture
def real_data() -> Path:
    if not (REAL_DATA / "Segmented").is_dir():
        pytest.skip("the team copy of the leukemia dataset is not here")
    return REAL_DATA


def fail_on_call(monkeypatch: pytest.MonkeyPatch, owner: object, name: str, call: int,
                 error: BaseException) -> None:
    """Make the `call`-th call of owner.name raise `error`; every other call goes through."""
    real = getattr(owner, name)
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
