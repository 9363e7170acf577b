"""The peer for benchmarks/peer.py: a small search written the way Optuna's and MLflow's
documentation show, without allsearch. An Optuna objective trains the paper's network (only
the loss is searched) inside an MLflow nested run with `mlflow.keras.autolog()`; test
accuracy and the test split's prediction time are logged by hand; the parent run gets the
best trial's parameters and value. It deliberately imports nothing from allsearch.

    python benchmarks/peer_script.py DATA_FOLDER --tracking-uri URI [--trials 4] [--epochs 4]
                                     [--batch-size 64] [--precision float32|bfloat16]
                                     [--experiment peer]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import keras
import mlflow
import numpy as np
import optuna
from keras import layers
from PIL import Image
from sklearn.model_selection import train_test_split


def load(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The paper's pipeline: every image to 100x100 grayscale in [0, 1], labels by folder."""
    images, labels = [], []
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    for label, name in enumerate(classes):
        for path in sorted((folder / name).iterdir()):
            if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
                with Image.open(path) as image:
                    gray = image.convert("L").resize((100, 100), Image.BILINEAR)
                images.append(np.asarray(gray, dtype=np.float32) / 255.0)
                labels.append(label)
    return np.stack(images)[..., None], np.array(labels)


def network(n_classes: int) -> keras.Model:
    # The paper's network (Conv 64@5x5, 32@5x5, 128@3x3, each ReLU + 2x2 max-pool, dense 128).
    return keras.Sequential([
        keras.Input((100, 100, 1)),
        layers.Conv2D(64, 5, activation="relu"), layers.MaxPooling2D(2),
        layers.Conv2D(32, 5, activation="relu"), layers.MaxPooling2D(2),
        layers.Conv2D(128, 3, activation="relu"), layers.MaxPooling2D(2),
        layers.Flatten(), layers.Dense(128, activation="relu"), layers.Dropout(0.5),
        layers.Dense(n_classes, activation="softmax", dtype="float32"),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--experiment", default="peer")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precision", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.precision == "bfloat16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    mlflow.set_tracking_uri(args.tracking_uri)
    mlflow.set_experiment(args.experiment)
    mlflow.keras.autolog()

    x, y = load(Path(args.data))
    x_train, x_rest, y_train, y_rest = train_test_split(x, y, test_size=0.3, stratify=y,
                                                        random_state=42)
    x_val, x_test, y_val, y_test = train_test_split(x_rest, y_rest, test_size=0.5,
                                                    stratify=y_rest, random_state=42)
    n_classes = int(y.max()) + 1
    y_train_1h = keras.utils.to_categorical(y_train, n_classes)
    y_val_1h = keras.utils.to_categorical(y_val, n_classes)

    def objective(trial: optuna.Trial) -> float:
        with mlflow.start_run(nested=True, run_name=f"trial-{trial.number}"):
            loss = trial.suggest_categorical(
                "loss", ["categorical_crossentropy", "binary_crossentropy"])
            mlflow.log_params(trial.params)
            keras.utils.set_random_seed(args.seed)
            model = network(n_classes)
            model.compile(optimizer=keras.optimizers.Adam(0.001), loss=loss,
                          metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
            history = model.fit(x_train, y_train_1h, epochs=args.epochs,
                                batch_size=args.batch_size, validation_data=(x_val, y_val_1h),
                                verbose=0)
            started = time.perf_counter()
            predictions = model.predict(x_test, verbose=0).argmax(1)
            mlflow.log_metrics({"test_accuracy": float((predictions == y_test).mean()),
                                "test_prediction_time_s": time.perf_counter() - started})
            return float(history.history["val_accuracy"][-1])

    with mlflow.start_run(run_name="study"):
        study = optuna.create_study(direction="maximize",
                                    sampler=optuna.samplers.TPESampler(seed=args.seed))
        study.optimize(objective, n_trials=args.trials)
        mlflow.log_params({f"best_{k}": v for k, v in study.best_params.items()})
        mlflow.log_metric("best_val_accuracy", study.best_value)
    print(f"best val accuracy {study.best_value:.3f} with {study.best_params}")


if __name__ == "__main__":
    main()
