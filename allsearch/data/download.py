"""Where a dataset is: a folder the user names, a bundle file, or the default folder, which
is downloaded from Kaggle (with kagglehub) when it is missing. Nothing here reads images."""

from __future__ import annotations

import sys
from pathlib import Path

from allsearch.core.errors import DataError

__all__ = ["resolve_data_path", "DEFAULT_DATA", "KAGGLE_HANDLE", "BUNDLE_SUFFIX"]

DEFAULT_DATA = Path("data/leukemia/Original")
KAGGLE_HANDLE = "mehradaria/leukemia"
BUNDLE_SUFFIX = ".npz"  # a dataset bundle (allsearch.data.dataset.save_bundle)


def resolve_data_path(path: str | Path | None, *, download: bool = True) -> Path:
    """The dataset folder to use: the given one, or the default (downloaded when missing)."""
    if path is not None:
        root = Path(path).expanduser()
        if root.is_file() and root.suffix == BUNDLE_SUFFIX:
            return root
        if not root.exists():
            raise DataError(f"data folder '{root}' does not exist; pass --data with a folder "
                            f"of class folders (e.g. .../leukemia/Original)")
        if not root.is_dir():
            raise DataError(f"data path '{root}' is a file; pass --data with a folder of class "
                            f"folders, one folder per class")
        return root
    if DEFAULT_DATA.is_dir():
        return DEFAULT_DATA
    if not download:
        raise DataError(_manual_download_hint("the default data folder is missing"))
    return _download_default()


def _manual_download_hint(why: str) -> str:
    return (f"{why}: download https://www.kaggle.com/datasets/{KAGGLE_HANDLE} by hand, unzip it "
            f"so that '{DEFAULT_DATA}' holds the class folders (Benign, Early, Pre, Pro), "
            f"or pass --data PATH to a folder of class folders")


def _download_default() -> Path:
    target = DEFAULT_DATA.parent
    print(f"No data at '{DEFAULT_DATA}': downloading the Kaggle dataset {KAGGLE_HANDLE} "
          f"into '{target}' (about 100 MB, once) ...", file=sys.stderr)
    try:
        import kagglehub

        kagglehub.dataset_download(KAGGLE_HANDLE, output_dir=str(target))
    except Exception as exc:  # any failure (offline, credentials, quota) ends the same way
        text = str(exc)
        if any(k in text for k in ("NameResolution", "Max retries", "Connection", "timed out")):
            reason = "no network connection to kaggle.com"
        else:
            reason = text.splitlines()[0][:160] if text else type(exc).__name__
        raise DataError(_manual_download_hint(f"downloading {KAGGLE_HANDLE} failed ({reason})")) \
            from None
    if DEFAULT_DATA.is_dir():
        return DEFAULT_DATA
    nested = sorted(target.rglob(DEFAULT_DATA.name))
    if nested and nested[0].is_dir():
        return nested[0]
    raise DataError(_manual_download_hint(f"the download did not contain '{DEFAULT_DATA.name}/'"))
