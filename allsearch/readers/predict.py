"""The champion (or any logged allsearch model) on new images.

    python -m allsearch.predict IMAGE_OR_FOLDER... [--model URI] [--format table|csv|json]

The model is the MLflow pyfunc a study logged (allsearch.training.serving): it applies the training
preprocessing itself, HOG/PCA included, so this module only finds the images, sends their
files to the model and prints one row per image. A folder of class folders (as the training
data) is read as labelled: the true class is printed beside the prediction, with the accuracy.
"""

from __future__ import annotations

import contextlib
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from allsearch.core.contract import CHAMPION_ALIAS, model_name
from allsearch.core.errors import AllsearchError, DataError, ModelError, StoreError, first_line, redact
from allsearch.core.process_state import mlflow_fluent
from allsearch.data.images import IMAGE_EXTENSIONS, decode_image_bytes
from allsearch.tracking.store import check_tracking_uri, missing_store, open_client, resolve_tracking_uri

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel

__all__ = ["ImageFile", "SkippedFile", "resolve_model_uri", "load_classifier", "collect_images",
           "predict_files"]

FORMATS = ("table", "csv", "json")
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
# Model URIs resolved through the tracking store (a path or file:// URI is read directly).
STORE_SCHEMES = ("models:/", "runs:/")
# What Python prints for an object without a text of its own (PIL names its BytesIO so).
_OBJECT_REPR = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>")


class SkippedFile(UserWarning):
    """A file in a folder of images that is not predicted (hidden, not an image, unreadable)."""


@dataclass(frozen=True)
class ImageFile:
    path: Path
    true_class: str | None = None  # the class folder it sits in, when the input is labelled


# ------------------------------------------------------------------------------ the model


def resolve_model_uri(model: str | None = None, *, study: str | None = None,
                      tracking_uri: str | None = None) -> str:
    """An MLflow model URI: `model` as given (a bare run id means that run's model), else
    the champion of `study`, else the most recently updated champion in the store."""
    if model:
        return f"runs:/{model}/model" if _RUN_ID.match(model) else model
    if study:
        return f"models:/{model_name(study)}@{CHAMPION_ALIAS}"
    missing = missing_store(tracking_uri)  # asked first: reading would create its folder
    if missing is not None:
        raise ModelError(f"no champion model in 'sqlite:///{missing}': there is no MLflow store "
                         f"there yet; run a study first (python -m allsearch.study), or pass "
                         f"--tracking-uri or --model URI")
    uri = resolve_tracking_uri(tracking_uri)
    try:
        # open_client: a server that does not answer is one line at once (MLflow would retry
        # for minutes).
        registered = open_client(uri).search_registered_models(
            filter_string="name LIKE 'allsearch-%'", max_results=1000)
    except AllsearchError:
        raise
    except Exception as exc:  # a store that cannot be read
        raise StoreError(f"cannot read the model registry of '{redact(uri)}' "
                         f"({first_line(exc)[:160]}); check --tracking-uri") from None
    champions = [m for m in registered if CHAMPION_ALIAS in (m.aliases or {})]
    if not champions:
        raise ModelError(f"no champion model in '{redact(uri)}': run a study first "
                         f"(python -m allsearch.study), or pass --model URI (models:/NAME@ALIAS, "
                         f"runs:/RUN_ID/model, or a run id)")
    latest = max(champions, key=lambda m: m.last_updated_timestamp or 0)
    return f"models:/{latest.name}@{CHAMPION_ALIAS}"


def load_classifier(model_uri: str, *, tracking_uri: str | None = None) -> PyFuncModel:
    """The pyfunc behind `model_uri`, checked to be an allsearch image classifier."""
    import mlflow

    missing = missing_store(tracking_uri)  # asked first: reading would create its folder
    store: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if missing is None:
        uri = resolve_tracking_uri(tracking_uri)
        if model_uri.startswith(STORE_SCHEMES):
            check_tracking_uri(uri)  # a server that does not answer: one line at once
        # load_model reads the store from MLflow's global URIs: set only while it loads.
        store = mlflow_fluent(uri)
    elif model_uri.startswith(STORE_SCHEMES):  # a model in the store, not a folder
        raise ModelError(f"model '{model_uri}' cannot be loaded from 'sqlite:///{missing}': "
                         f"there is no MLflow store there yet; run a study first (python -m "
                         f"allsearch.study), or pass --tracking-uri of the store that holds it")
    else:  # a model folder: no store is needed, and none is made
        uri = f"sqlite:///{missing}"
    try:
        with store, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = mlflow.pyfunc.load_model(model_uri)
    except Exception as exc:  # MLflow raises many types for a missing or unreadable model
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"model '{model_uri}' cannot be loaded from '{redact(uri)}' ({reason}); "
                         f"check --model (models:/NAME@champion, runs:/RUN_ID/model or a run "
                         f"id) and --tracking-uri") from None
    metadata = loaded.metadata.metadata or {}
    if "allsearch_classifier" not in metadata or not metadata.get("class_names"):
        raise ModelError(f"model '{model_uri}' is not an allsearch image classifier (it was "
                         f"logged without the image preprocessing, e.g. as a bare Keras model "
                         f"by an older allsearch): pass a model logged by a current study")
    return loaded


def model_classes(loaded: PyFuncModel) -> list[str]:
    """The classes of a model load_classifier checked (its metadata names them)."""
    return list((loaded.metadata.metadata or {})["class_names"])


# ------------------------------------------------------------------------------ the images


def collect_images(inputs: list[str | Path], *, labelled: bool = True) -> list[ImageFile]:
    """The image files named or found under the folders named, in a stable order.

    A file named on the command line must be a readable image (DataError otherwise); inside a
    folder, hidden files and non-images are skipped with a warning, as in training. A folder
    whose images all sit in sub-folders is read as a folder of class folders (`labelled`)."""
    found: list[ImageFile] = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise DataError(f"'{path}' does not exist; pass image files or folders of images")
        if path.is_file():
            _check_image_file(path)
            found.append(ImageFile(path))
            continue
        found.extend(_images_in_folder(path, labelled=labelled))
    if not found:
        raise DataError(f"no images in {', '.join(repr(str(i)) for i in inputs)} "
                        f"(looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return found


def _check_image_file(path: Path) -> None:
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise DataError(f"'{path}' is not an image file ({path.suffix or 'no extension'}); "
                        f"pass {', '.join(sorted(IMAGE_EXTENSIONS))} files or folders of them")
    try:
        decode_image_bytes(path.read_bytes())
    except DataError as exc:
        raise DataError(f"'{path}' is {_reason(exc)}; pass a PNG, JPEG, BMP or TIFF image") from None


def _reason(exc: BaseException) -> str:
    """Why an image cannot be read, without the `<_io.BytesIO object at 0x...>` PIL adds."""
    return _OBJECT_REPR.sub("", str(exc))


def _images_in_folder(folder: Path, *, labelled: bool) -> list[ImageFile]:
    files, skipped = [], []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if not p.is_file():
            continue
        if any(part.startswith(".") for part in rel.parts):
            skipped.append(f"{p}: hidden file")
        elif p.suffix.lower() not in IMAGE_EXTENSIONS:
            skipped.append(f"{p}: not an image ({p.suffix or 'no extension'})")
        else:
            try:
                decode_image_bytes(p.read_bytes())
            except DataError as exc:
                skipped.append(f"{p}: {_reason(exc)}")
                continue
            files.append(rel)
    for line in skipped:
        warnings.warn(SkippedFile(f"skipped {line}"), stacklevel=3)
    by_class = labelled and files and all(len(rel.parts) >= 2 for rel in files)
    return [ImageFile(folder / rel, rel.parts[0] if by_class else None) for rel in files]


# ------------------------------------------------------------------------------ predicting


def predict_files(loaded: PyFuncModel, images: list[ImageFile], *, batch_size: int = 256
                  ) -> pd.DataFrame:
    """One row per image: file, (true_class,) class, confidence, p_<class>..."""
    from allsearch.training.serving import encode_image, images_frame

    classes = model_classes(loaded)
    truths = {i.true_class for i in images if i.true_class is not None}
    unknown = sorted(truths - set(classes))
    if unknown:
        raise ModelError(f"the model was trained on classes {classes}; the input's class "
                         f"folder(s) {unknown} are not among them: use a model trained on these "
                         f"classes, or pass --unlabelled to predict the images anyway")
    frames = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        frame = loaded.predict(images_frame([encode_image(i.path.read_bytes()) for i in chunk]))
        frames.append(pd.DataFrame(frame))
    result = pd.concat(frames, ignore_index=True)
    if len(result.columns) != 2 + len(classes):
        raise ModelError(f"the model returned {len(result.columns)} columns for {len(classes)} "
                         f"classes; it is not an allsearch image classifier")
    result.insert(0, "file", [str(i.path) for i in images])
    if truths:
        result.insert(1, "true_class", [i.true_class for i in images])
    return result


def format_predictions(frame: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return frame.to_csv(index=False, float_format="%.6f").rstrip("\n")
    if fmt == "json":
        records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
        return json.dumps(records, indent=1)  # a missing true class is null, never NaN
    return frame.to_string(index=False, float_format=lambda v: f"{v:.3f}")
