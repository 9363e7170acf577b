"""The paper's CNN as a factory of plain values: model.py only builds networks.

Paper (conv_layers=3): Conv 64@5x5 -> Conv 32@5x5 -> Conv 128@3x3, each ReLU + 2x2 max-pool,
flatten, dense 128 ReLU, dropout 0.5, dense softmax; Adam at lr 0.001. 'valid' padding,
which gives the 1,728,932 parameters of the paper's network on 100x100x1 inputs, 4 classes.
Each block pools before its ReLU: the same function and gradients as ReLU then pool (both
are monotone), with the ReLU on a quarter of the values (benchmarks/throughput.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from allsearch.core.errors import ModelError
from allsearch.core.space import HParams

if TYPE_CHECKING:
    import keras

# Keras is imported where a network is built: the geometry below (max_conv_layers) is read by
# processes that never build one.

__all__ = ["build_cnn", "compile_model", "conv_blocks", "max_conv_layers", "PAPER_BLOCKS", "PIXELS", "HOG_PCA"]

# (filters, kernel) of the paper's three blocks; deeper networks add further 128@3x3 blocks.
PAPER_BLOCKS: tuple[tuple[int, int], ...] = ((64, 5), (32, 5), (128, 3))
EXTRA_BLOCK = (128, 3)
# Input names of the network, also the keys of the dict a 'both' model takes.
PIXELS = "pixels"
HOG_PCA = "hog_pca"


def conv_blocks(conv_layers: int) -> list[tuple[int, int]]:
    """(filters, kernel) per block: a prefix of the paper's list, or it plus 128@3x3 blocks."""
    extra = max(0, conv_layers - len(PAPER_BLOCKS))
    return list(PAPER_BLOCKS[:conv_layers]) + [EXTRA_BLOCK] * extra


def _feature_map_sizes(conv_layers: int, size: int) -> list[int]:
    sizes = []
    for _, kernel in conv_blocks(conv_layers):
        size = (size - kernel + 1) // 2  # valid convolution, then 2x2 max-pool
        sizes.append(size)
    return sizes


def max_conv_layers(image_size: int) -> int:
    """The deepest network whose feature map stays at least 1x1 (5 for 100x100)."""
    depth = 0
    while True:
        sizes = _feature_map_sizes(depth + 1, image_size)
        if sizes[-1] < 1:
            return depth
        depth += 1


def build_cnn(hparams: HParams, n_classes: int, *, input_shape: Sequence[int] = (100, 100, 1),
              n_features: int = 100, compile: bool = True,
              pool_before_relu: bool = True) -> keras.Model:
    """A compiled Keras model for these hyperparameters.

    features='pixels': the CNN on the image; 'hog_pca': a dense network on the PCA components;
    'both': the CNN branch and a dense branch on the components, joined before the dense layer.
    pool_before_relu=False builds the earlier layer order of each block (ReLU, then pool):
    the same function, slower; benchmarks/throughput.py times both.
    """
    import keras
    from keras import layers

    if n_classes < 2:
        raise ModelError(f"n_classes must be >= 2, got {n_classes}")
    inputs: list[keras.KerasTensor] = []
    branches: list[keras.KerasTensor] = []
    if hparams.features in ("pixels", "both"):
        image = keras.Input(shape=tuple(input_shape), name=PIXELS)
        inputs.append(image)
        x = _augmentation(image) if hparams.augment else image
        if hparams.standardize:
            x = _standardization(x)
        branches.append(_conv_branch(x, hparams, int(input_shape[0]), pool_before_relu))
    if hparams.features in ("hog_pca", "both"):
        components = keras.Input(shape=(n_features,), name=HOG_PCA)
        inputs.append(components)
        # A dense projection gives the 100 components a learned representation of their own.
        branches.append(layers.Dense(hparams.dense_units, activation="relu",
                                     name="hog_pca_dense")(components))
    x = branches[0] if len(branches) == 1 else layers.Concatenate(name="join")(branches)
    x = layers.Dense(hparams.dense_units, activation="relu", name="dense")(x)
    x = layers.Dropout(hparams.dropout, name="dropout")(x)
    # The output stays float32 under a mixed-precision policy: softmax in bf16 loses accuracy.
    outputs = layers.Dense(n_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    model = keras.Model(inputs=inputs if len(inputs) > 1 else inputs[0], outputs=outputs,
                        name=f"allsearch_cnn_{hparams.features}_{hparams.conv_layers}conv")
    if compile:
        compile_model(model, hparams)
    return model


def compile_model(model: keras.Model, hparams: HParams) -> None:
    """Compile `model` for these hyperparameters: Adam (AdamW under weight_decay) at
    `learning_rate`, the `loss` (with label_smoothing), categorical accuracy. Every network
    allsearch compiles, the paper's and an uncompiled one of a user's (allsearch.training.user_model)."""
    import keras

    optimizer = (keras.optimizers.AdamW(learning_rate=hparams.learning_rate,
                                        weight_decay=hparams.weight_decay)
                 if hparams.weight_decay else
                 keras.optimizers.Adam(learning_rate=hparams.learning_rate))
    loss: object = hparams.loss
    if hparams.label_smoothing:
        kind = (keras.losses.CategoricalCrossentropy if hparams.loss == "categorical_crossentropy"
                else keras.losses.BinaryCrossentropy)
        loss = kind(label_smoothing=hparams.label_smoothing)
    model.compile(
        optimizer=optimizer,
        loss=loss,
        # Always categorical: Keras' plain "accuracy" becomes binary accuracy under a
        # binary cross-entropy loss and inflates the number.
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )


def _augmentation(image: keras.KerasTensor) -> keras.KerasTensor:
    """Random flips, rotations up to 10 degrees, brightness and contrast changes of 10%.

    Keras' preprocessing layers act only while training (model.fit), so the validation and
    test splits, and every prediction, see the images unchanged. A blood cell has no up or
    left, so every flip and small rotation is still a valid image of its class. Only the
    pixel branch is augmented: the HOG/PCA components are computed once, from the unaugmented
    images (so `augment` changes nothing under features=hog_pca).
    """
    from keras import layers

    x = layers.RandomFlip("horizontal_and_vertical", name="augment_flip", dtype="float32")(image)
    x = layers.RandomRotation(0.028, fill_mode="reflect", name="augment_rotate",
                              dtype="float32")(x)
    x = layers.RandomBrightness(0.1, value_range=(0.0, 1.0), name="augment_brightness",
                                dtype="float32")(x)
    return layers.RandomContrast(0.1, value_range=(0.0, 1.0), name="augment_contrast",
                                 dtype="float32")(x)


def _standardization(image: keras.KerasTensor) -> keras.KerasTensor:
    """Each image to zero mean and unit variance (over its pixels), in the network itself so
    that training, evaluation and serving all see it.

    Why: the Original images are mostly bright background (pixel mean 0.855; Segmented 0.058)
    and vary in exposure between slides (per-image means 0.66-0.96); centred, unit-scale
    inputs keep the first layers' ReLUs from starting out all on or all off. LayerNormalization over height, width and channel
    without a learned scale or offset is exactly this, as a built-in (serializable) layer.
    After augmentation, it also undoes most of the brightness/contrast change (all but the
    clipping): flips and rotations remain.
    """
    from keras import layers

    return layers.LayerNormalization(axis=(1, 2, 3), center=False, scale=False, epsilon=1e-6,
                                     name="standardize", dtype="float32")(image)


def _conv_branch(image: keras.KerasTensor, hparams: HParams, image_size: int,
                 pool_before_relu: bool) -> keras.KerasTensor:
    from keras import layers

    conv_layers = hparams.conv_layers
    deepest = max_conv_layers(image_size)
    if not 1 <= conv_layers <= deepest:
        raise ModelError(f"conv_layers={conv_layers} does not fit a {image_size}x{image_size} "
                         f"input: it takes 1 to {deepest} conv layers (each block shrinks the "
                         f"feature map; sizes would be {_feature_map_sizes(conv_layers, image_size)})")
    x = image
    for i, (filters, kernel) in enumerate(conv_blocks(conv_layers), start=1):
        width = max(1, round(filters * hparams.filter_multiplier))
        # Normalize before the nonlinearity; the convolution's bias is then redundant.
        x = layers.Conv2D(width, kernel, use_bias=not hparams.batch_norm, name=f"conv{i}")(x)
        pool, relu = layers.MaxPooling2D(2, name=f"pool{i}"), layers.Activation("relu", name=f"relu{i}")
        if hparams.batch_norm and hparams.bn_after_pool:
            # Conv, pool, norm, ReLU: Keras' normalization (float32 passes over the map, not
            # fused) on a quarter of the values; its statistics are those of the pooled map.
            x = relu(layers.BatchNormalization(name=f"bn{i}")(pool(x)))
            continue
        if hparams.batch_norm:
            x = layers.BatchNormalization(name=f"bn{i}")(x)
        # max(relu(a), relu(b)) == relu(max(a, b)), gradients included: pooling first runs
        # the ReLU (and its gradient) on a quarter of the first block's large feature map,
        # which is memory-bound on a CPU (1.1x images/s, benchmarks/README.md).
        x = relu(pool(x)) if pool_before_relu else pool(relu(x))
    if hparams.pooling == "gap":
        # One value per filter: far fewer weights in the dense layer than flattening.
        return layers.GlobalAveragePooling2D(name="gap")(x)
    return layers.Flatten(name="flatten")(x)
