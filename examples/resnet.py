"""A small residual network, the example of a network of your own for allsearch.

    python -m allsearch.study --space examples/resnet.yaml --model examples.resnet:build \
        --color rgb --data DIR --trials 20

(from the repository root: `examples` is imported from the current folder). allsearch calls
`build(params, input_shape, n_classes)` for every trial (docs/guide.md, "A network of your
own"): `params` holds every hyperparameter of the trial, the space's knobs of this network
(`width`, `depth`) among them; `input_shape` is the images' (H, W, C), e.g. (64, 64, 3) with
--image-size 64 --color rgb; `n_classes` the data's classes. It returns the network uncompiled,
so allsearch compiles it: Adam at the trial's `learning_rate`, its `loss`, accuracy.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

STAGES = 3  # each halves the feature map and doubles the filters
# Batch normalization's moving statistics (what inference uses) follow about the last
# 1 / (1 - momentum) batches. Keras' default, 0.99, averages over ~100 batches: in a trial
# of a thousand steps or so, weights still moving leave them behind the network they
# normalize, and validation accuracy swings from epoch to epoch. 0.9 follows the last ~10.
BN_MOMENTUM = 0.9  # the knob `bn_momentum`


def build(params: dict[str, Any], input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    """A ResNet-style network: each image standardized (knob `image_standardize`, default
    true), a strided 3x3 stem of `width` filters (half the resolution: a quarter of the
    work), STAGES stages of `depth` residual blocks (3x3 convolutions with batch
    normalization of momentum `bn_momentum`; a 1x1 projection where the shape changes),
    global average pooling, dropout, and n_classes softmax outputs."""
    width = int(params.get("width", 16))
    depth = int(params.get("depth", 2))
    momentum = float(params.get("bn_momentum", BN_MOMENTUM))
    if width < 1 or depth < 1:
        raise ValueError(f"width and depth must be >= 1, got width={width}, depth={depth}")
    inputs = keras.Input(shape=input_shape, name="pixels")
    # Each image to mean 0 and variance 1: images that differ in brightness and contrast
    # (the leukemia Original set's do) otherwise make batch normalization's statistics of
    # one batch a poor guide to the next, and inference (moving statistics) drifts from
    # training (batch statistics).
    x = inputs
    if params.get("image_standardize", True):
        x = layers.LayerNormalization(axis=(1, 2, 3), center=False, scale=False, epsilon=1e-6,
                                      dtype="float32", name="standardize")(x)
    x = layers.Conv2D(width, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = _batch_norm("stem_bn", momentum)(x)
    x = layers.Activation("relu", name="stem_relu")(x)
    for stage in range(STAGES):
        for block in range(depth):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _residual_block(x, width * 2 ** stage, stride, momentum, name=f"s{stage}b{block}")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(float(params.get("dropout", 0.0)), name="dropout")(x)
    # float32 output: the probabilities stay exact under a mixed-precision policy.
    outputs = layers.Dense(n_classes, activation="softmax", dtype="float32",
                           name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"resnet_w{width}_d{depth}")


def _residual_block(x: Any, filters: int, stride: int, momentum: float, *,
                    name: str) -> Any:
    shortcut = x
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                      name=f"{name}_conv1")(x)
    y = _batch_norm(f"{name}_bn1", momentum)(y)
    y = layers.Activation("relu", name=f"{name}_relu1")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = _batch_norm(f"{name}_bn2", momentum)(y)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False,
                                 name=f"{name}_project")(x)
        shortcut = _batch_norm(f"{name}_project_bn", momentum)(shortcut)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.Activation("relu", name=f"{name}_relu2")(y)


def _batch_norm(name: str, momentum: float) -> Any:
    return layers.BatchNormalization(momentum=momentum, name=name)
