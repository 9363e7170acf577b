"""The logged model: an MLflow pyfunc that takes image files and returns class probabilities.

A trial's Keras network alone is not a usable model: it needs the training preprocessing in
front of it (decode, gray or RGB, resized to the training size, scale to [0, 1], and for
`hog_pca`/`both` the HOG ->
PCA pipeline fitted on that trial's train split). `ImageClassifier` carries all of it, so
`mlflow models serve`, `mlflow.pyfunc.load_model` and `python -m allsearch.predict` apply the
training preprocessing through allsearch's own functions (allsearch/ is logged with the model
as its code, for environments where the package is not installed; where it is, MLflow imports
the installed one).

The fitted HOG/PCA pipeline travels as numbers (`feature_pipeline.npz`,
allsearch.data.features.save_pipeline), not as a pickle. Loading the model as a whole is MLflow's
pyfunc loading, which unpickles the model's Python object and runs its code: a store's models
are as trusted as the store (docs/guide.md, "What a record and a store are trusted with").

Input: a DataFrame with one string column `image`, each value an image file (PNG, JPEG, BMP,
TIFF, ...) encoded in base64. Output: one row per image: `class` (the predicted class name),
`confidence` (its probability) and `p_<class>` for every class the model knows.
"""

from __future__ import annotations

import base64
import binascii
import json
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from allsearch.core.contract import NETWORK_FILE, PIPELINE_FILE  # a record's names, the same
from allsearch.core.errors import DataError

__all__ = ["IMAGE_COLUMN", "ImageClassifier", "log_classifier", "encode_image", "images_frame",
           "probability_column"]

IMAGE_COLUMN = "image"
CONFIG_FILE = "classifier.json"
PACKAGE_DIR = Path(__file__).resolve().parent


def probability_column(class_name: str) -> str:
    return f"p_{class_name}"


def encode_image(data: bytes) -> str:
    """An image file's bytes as the model's input value (base64 text, JSON-safe)."""
    return base64.b64encode(data).decode("ascii")


def images_frame(encoded: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({IMAGE_COLUMN: list(encoded)})


class ImageClassifier(PythonModel):
    """Image files in, class and probabilities out, through the training preprocessing."""

    def load_context(self, context: Any) -> None:
        from allsearch.core.hardware import start_tensorflow

        start_tensorflow()  # quietly: TensorFlow's start-up lines are no use to a caller
        import keras

        artifacts = context.artifacts
        self.config = json.loads(Path(artifacts["config"]).read_text())
        self.class_names: list[str] = list(self.config["class_names"])
        self.network = keras.saving.load_model(artifacts["network"], compile=False)
        self.pipeline = (_load_pipeline(artifacts["feature_pipeline"])
                         if "feature_pipeline" in artifacts else None)

    # A DataFrame hint: what MLflow accepts without reading a second schema from the hints
    # (the signature is the schema) and without warning about missing hints.
    def predict(self, context, model_input: pd.DataFrame, params=None):
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from allsearch.data.images import decode_image_bytes, to_network_input
        from allsearch.training.trial import network_inputs

        # An MlflowException reaches an HTTP client of the scoring server with its message.
        try:
            values = _image_values(model_input)
        except DataError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
        pixels = []
        for index, value in enumerate(values):
            try:
                # The size and colour the network was trained on (gray for a model logged
                # before colour was a setting).
                pixels.append(decode_image_bytes(_as_bytes(value), self.config["image_size"],
                                                 self.config.get("color", "gray")))
            except DataError as exc:
                raise MlflowException(f"image {index}: {exc}",
                                      error_code=INVALID_PARAMETER_VALUE) from None
        images = to_network_input(np.stack(pixels))
        components = self.pipeline.transform(images) if self.pipeline is not None else None
        inputs = network_inputs(images, components, self.config["features"])
        probabilities = np.asarray(self.network.predict(inputs, verbose=0), dtype=np.float64)
        best = probabilities.argmax(axis=1)
        frame = pd.DataFrame({"class": [self.class_names[i] for i in best],
                              "confidence": probabilities[np.arange(len(best)), best]})
        for i, name in enumerate(self.class_names):
            frame[probability_column(name)] = probabilities[:, i]
        return frame


def _load_pipeline(path: str) -> Any:
    from allsearch.data.features import load_pipeline

    if path.endswith(".joblib"):
        # A model logged before the pipeline was kept as numbers. MLflow has unpickled this
        # model's own object already: this file is as trusted as the store it came from.
        import joblib

        return joblib.load(path)
    return load_pipeline(path)


def _image_values(model_input: Any) -> list[Any]:
    if isinstance(model_input, pd.DataFrame):
        if IMAGE_COLUMN not in model_input.columns:
            raise DataError(f"the input needs a column {IMAGE_COLUMN!r} of base64-encoded image "
                            f"files; got columns {list(model_input.columns)}")
        values = model_input[IMAGE_COLUMN].tolist()
    elif isinstance(model_input, dict):
        values = list(np.atleast_1d(model_input.get(IMAGE_COLUMN, [])))
    else:
        values = list(np.atleast_1d(model_input))
    if not values:
        raise DataError("no images in the input")
    return values


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    text = str(value).strip()
    if text.startswith("data:") and "," in text:  # a data URL: data:image/png;base64,....
        text = text.split(",", 1)[1]
    try:
        # Wrapped base64 (76-column lines, as `base64` writes by default) is fine too.
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise DataError("not base64 text (encode each image file with base64)") from None


def log_classifier(*, network: Any, class_names: Sequence[str], hparams: dict[str, Any],
                   pipeline: Any | None, requirements: Sequence[str]) -> str:
    """Log the pyfunc in the active MLflow run; returns the model's URI. `hparams` holds the
    images' `image_size` and `color` too (allsearch.tracking.tracked: the training images'), which
    the model decodes new files with."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    features = str(hparams.get("features", "pixels"))
    if features != "pixels" and pipeline is None:
        raise ValueError(f"a features={features} network needs its fitted HOG/PCA pipeline "
                         f"to be logged with it")
    images = {"image_size": int(hparams.get("image_size") or _image_size(network)),
              "color": str(hparams.get("color") or _color(network))}
    hparams = {k: v for k, v in hparams.items() if k not in images}
    config = {"class_names": list(class_names), "features": features, **images,
              "hparams": hparams, "input": f"column {IMAGE_COLUMN!r}: base64 image files"}
    signature = ModelSignature(
        inputs=Schema([ColSpec("string", IMAGE_COLUMN)]),
        outputs=Schema([ColSpec("string", "class"), ColSpec("double", "confidence"),
                        *(ColSpec("double", probability_column(c)) for c in class_names)]))
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = {"network": str(Path(tmp) / NETWORK_FILE), "config": str(Path(tmp) / CONFIG_FILE)}
        network.save(artifacts["network"])
        Path(artifacts["config"]).write_text(json.dumps(config, indent=1))
        if pipeline is not None and features != "pixels":
            from allsearch.data.features import save_pipeline

            artifacts["feature_pipeline"] = str(Path(tmp) / PIPELINE_FILE)
            save_pipeline(pipeline, artifacts["feature_pipeline"])
        with warnings.catch_warnings():
            # "no input example": on purpose, a base64 image would bloat every logged model;
            # the signature and the README document the input.
            warnings.filterwarnings("ignore", message=".*input example", category=UserWarning)
            info = mlflow.pyfunc.log_model(
                name="model", python_model=ImageClassifier(), artifacts=artifacts,
                code_paths=[str(PACKAGE_DIR)], signature=signature,
                pip_requirements=list(requirements),
                metadata={"class_names": list(class_names), "hparams": hparams,
                          "allsearch_classifier": 1})
    return info.model_uri


def _color(network: Any) -> str:
    """The colour of a network's pixel input where no run said it: three channels are RGB."""
    from allsearch.training.model import PIXELS

    for tensor in network.inputs:
        if tensor.name.startswith(PIXELS) or len(tensor.shape) == 4:
            return "rgb" if tensor.shape[-1] == 3 else "gray"
    return "gray"


def _image_size(network: Any) -> int:
    """Side of the pixel input (a HOG/PCA-only network still takes 100x100 images upstream)."""
    from allsearch.data.images import IMAGE_SIZE
    from allsearch.training.model import PIXELS

    for tensor in network.inputs:
        if tensor.name.startswith(PIXELS) or len(tensor.shape) == 4:
            return int(tensor.shape[1])
    return IMAGE_SIZE
