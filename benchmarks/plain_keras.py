"""The reference for benchmarks/overhead.py: the paper's best configuration as a plain Keras
script, written the way a researcher would without allsearch (no tracking, no cache, no
search). It deliberately imports nothing from allsearch.

    python benchmarks/plain_keras.py DATA_FOLDER [--epochs 15] [--batch-size 64]
                                     [--precision float32|bfloat16] [--seed 0]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import keras
import numpy as np
from keras import layers
from PIL import Image
from sklearn.model_selection import train_test_split


def load(folder: Path) -> tuple[np.ndarray, np.ndarray]:
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
    # The paper's network: as allsearch.training.model.build_cnn(conv_layers=3) builds it.
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
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precision", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    keras.utils.set_random_seed(args.seed)
    if args.precision == "bfloat16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    x, y = load(Path(args.data))
    x_train, x_rest, y_train, y_rest = train_test_split(x, y, test_size=0.3, stratify=y,
                                                        random_state=42)
    x_val, x_test, y_val, y_test = train_test_split(x_rest, y_rest, test_size=0.5,
                                                    stratify=y_rest, random_state=42)
    n_classes = int(y.max()) + 1
    model = network(n_classes)
    model.compile(optimizer=keras.optimizers.Adam(0.001), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x_train, keras.utils.to_categorical(y_train, n_classes), epochs=args.epochs,
              batch_size=args.batch_size, verbose=0,
              validation_data=(x_val, keras.utils.to_categorical(y_val, n_classes)))
    for name, xs, ys in (("val", x_val, y_val), ("test", x_test, y_test)):
        started = time.perf_counter()
        predictions = model.predict(xs, verbose=0).argmax(1)
        print(f"{name} accuracy {(predictions == ys).mean():.3f}, "
              f"prediction {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
