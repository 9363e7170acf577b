"""The model factory: the paper's network, every depth, feature modes, metrics."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from allsearch.core.errors import ModelError
from allsearch.core.space import HParams
from allsearch.training.model import build_cnn, conv_blocks, max_conv_layers


def test_paper_network_has_the_papers_parameter_count() -> None:
    model = build_cnn(HParams(), 4)
    assert model.count_params() == 1_728_932
    convs = [layer for layer in model.layers if layer.name.startswith("conv")]
    assert [(c.filters, c.kernel_size) for c in convs] == [(64, (5, 5)), (32, (5, 5)), (128, (3, 3))]
    assert model.get_layer("dropout").rate == 0.5
    assert model.optimizer.learning_rate.numpy() == pytest.approx(0.001)


def test_every_depth_builds_and_beyond_is_refused() -> None:
    assert max_conv_layers(100) == 5
    for depth in range(1, 6):
        model = build_cnn(HParams(conv_layers=depth), 4, compile=False)
        assert sum(layer.name.startswith("conv") for layer in model.layers) == depth
        assert model.output_shape == (None, 4)
    assert conv_blocks(2) == [(64, 5), (32, 5)]
    assert conv_blocks(5)[3:] == [(128, 3), (128, 3)]
    with pytest.raises(ModelError, match=r"conv_layers=6 does not fit a 100x100 input: it takes 1 to 5"):
        build_cnn(HParams(conv_layers=6), 4)
    with pytest.raises(ModelError, match="takes 1 to 2"):
        build_cnn(HParams(conv_layers=3), 4, input_shape=(20, 20, 1))


def test_feature_modes() -> None:
    both = build_cnn(HParams(features="both"), 4, n_features=100)
    assert {t.name for t in both.inputs} == {"pixels", "hog_pca"}
    out = both.predict({"pixels": np.zeros((2, 100, 100, 1)), "hog_pca": np.zeros((2, 100))},
                       verbose=0)
    assert out.shape == (2, 4)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    dense_only = build_cnn(HParams(features="hog_pca"), 3, n_features=20)
    assert dense_only.input_shape == (None, 20) and dense_only.output_shape == (None, 3)


@pytest.mark.parametrize("loss", ["categorical_crossentropy", "binary_crossentropy"])
def test_accuracy_is_categorical_under_both_losses(loss: str) -> None:
    model = build_cnn(HParams(loss=loss, features="hog_pca"), 4, n_features=5)
    # Fix the output: every row predicts class 0 with p ~ 0.98.
    out = model.get_layer("probabilities")
    kernel, bias = out.get_weights()
    out.set_weights([np.zeros_like(kernel), np.array([5.0, 0.0, 0.0, 0.0], np.float32)])
    scores = model.evaluate(np.zeros((4, 5)), np.eye(4), verbose=0, return_dict=True)
    # 1 of 4 rows right: categorical accuracy 0.25; binary accuracy would say 0.625.
    assert scores["accuracy"] == pytest.approx(0.25)


def test_wide_space_knobs_change_the_network_as_named() -> None:
    narrow = build_cnn(HParams(filter_multiplier=0.5), 4)
    assert [narrow.get_layer(f"conv{i}").filters for i in (1, 2, 3)] == [32, 16, 64]
    normed = build_cnn(HParams(batch_norm=True), 4)
    assert [layer.name for layer in normed.layers if layer.name.startswith("bn")] == ["bn1", "bn2", "bn3"]
    assert not normed.get_layer("conv1").use_bias
    gap = build_cnn(HParams(pooling="gap"), 4)
    assert gap.get_layer("gap").output.shape == (None, 128)
    assert gap.count_params() < 1_728_932 / 10  # the dense layer sees 128 values, not 18,432


def test_standardize_makes_the_network_blind_to_exposure() -> None:
    # A brighter, lower-contrast copy of the same images gives the same prediction only when
    # each image is standardized inside the network.
    images = np.random.default_rng(0).random((4, 100, 100, 1)).astype("float32")
    washed_out = 0.5 * images + 0.4
    for standardize in (True, False):
        keras.utils.set_random_seed(0)
        model = build_cnn(HParams(standardize=standardize), 4, compile=False)
        same = np.allclose(model.predict(images, verbose=0), model.predict(washed_out, verbose=0),
                           atol=1e-4)
        assert same is standardize
    assert model.get_layer("conv1").input.shape == (None, 100, 100, 1)


def test_augmentation_acts_in_training_only() -> None:
    model = build_cnn(HParams(augment=True), 4, compile=False)
    names = ["augment_flip", "augment_rotate", "augment_brightness", "augment_contrast"]
    assert [layer.name for layer in model.layers[1:5]] == names
    images = np.random.default_rng(0).random((4, 100, 100, 1)).astype("float32")
    x = images
    for name in names:
        layer = model.get_layer(name)
        np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    changed = np.asarray(model.get_layer("augment_rotate")(images, training=True))
    assert not np.allclose(changed, images)
    # Prediction (inference) is deterministic: the same images give the same output.
    np.testing.assert_array_equal(model.predict(images, verbose=0), model.predict(images, verbose=0))


def test_balanced_class_weights() -> None:
    from allsearch.training.trial import class_weights

    labels = np.array([0] * 10 + [1] * 30 + [2] * 20)
    weights = class_weights(labels, 4, "balanced")
    assert weights[0] == pytest.approx(60 / (3 * 10)) and weights[1] == pytest.approx(60 / (3 * 30))
    assert weights[3] == 1.0  # a class absent from the train split: neutral
    assert class_weights(labels, 4, "none") is None


def test_the_timed_prediction_traces_nothing() -> None:
    """The test split's prediction time is the paper's metric: after trace_predict, predicting
    the whole split (full batches and a smaller last one) compiles nothing inside the timing."""
    from allsearch.training.trial import PREDICT_BATCH, timed_predict, trace_predict

    model = build_cnn(HParams(conv_layers=1), 4, input_shape=(20, 20, 1))
    # uint8 pixels, as a Dataset holds them (the prediction makes them float32 batch by batch)
    x = np.zeros((3 * PREDICT_BATCH + 5, 20, 20, 1), dtype=np.uint8)
    trace_predict(model, x)
    traced = model.predict_function.experimental_get_tracing_count()
    timed_predict(model, x)
    assert model.predict_function.experimental_get_tracing_count() == traced


def test_each_block_pools_before_its_relu_and_computes_the_same_function() -> None:
    """Pooling first runs the ReLU on a quarter of the values; max and ReLU commute, so the
    network and its gradients are those of the paper's order (ReLU, then pool)."""
    import tensorflow as tf

    images = np.random.default_rng(0).random((8, 100, 100, 1)).astype("float32")
    labels = np.eye(4)[np.arange(8) % 4]
    # No dropout: its random mask would differ between the two networks in training mode.
    for hparams in (HParams(dropout=0.0),
                    HParams(dropout=0.0, batch_norm=True, conv_layers=4, filter_multiplier=0.5)):
        model = build_cnn(hparams, 4)
        names = [layer.name for layer in model.layers]
        assert names.index("pool1") < names.index("relu1") < names.index("conv2")
        before = build_cnn(hparams, 4, pool_before_relu=False)
        assert before.count_params() == model.count_params()
        before.set_weights(model.get_weights())
        outputs, gradients = [], []
        for network in (model, before):
            with tf.GradientTape() as tape:
                loss = keras.losses.categorical_crossentropy(labels, network(images, training=True))
            outputs.append(network(images, training=False).numpy())
            gradients.append([g.numpy() for g in tape.gradient(loss, network.trainable_weights)])
        np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-5, atol=1e-6)
        for new, old in zip(*gradients, strict=True):
            np.testing.assert_allclose(new, old, rtol=1e-4, atol=1e-6)


def test_bn_after_pool_normalizes_each_pooled_map() -> None:
    """conv, pool, norm, ReLU: the normalization sees a quarter of the values; the weights are
    the same in number; without batch_norm the knob changes nothing."""
    after = build_cnn(HParams(batch_norm=True, bn_after_pool=True, conv_layers=4), 4)
    names = [layer.name for layer in after.layers]
    for i in (1, 2, 3, 4):
        assert names.index(f"conv{i}") < names.index(f"pool{i}") < names.index(f"bn{i}") \
            < names.index(f"relu{i}")
        assert after.get_layer(f"bn{i}").input.shape == after.get_layer(f"pool{i}").output.shape
    assert after.get_layer("bn1").input.shape[1:3] == (48, 48)  # 96x96 after conv1, pooled
    before = build_cnn(HParams(batch_norm=True, conv_layers=4), 4)
    assert before.get_layer("bn1").input.shape[1:3] == (96, 96)
    assert after.count_params() == before.count_params()
    plain = build_cnn(HParams(bn_after_pool=True), 4)
    assert [layer.name for layer in plain.layers] == [layer.name for layer in build_cnn(HParams(), 4).layers]


def test_runs_keyed_before_bn_after_pool_keep_their_keys() -> None:
    """The duplicate rule's key of a configuration without the knob is the one it had before
    the knob existed (these keys were computed then), so an earlier study's runs are reused."""
    from types import SimpleNamespace

    from allsearch.tracking.identity import config_key

    data = SimpleNamespace(fingerprint="0123456789abcdef")
    assert config_key(HParams(), seeds=[0], dataset=data, precision="float32") == "b71b69ae11a288bd167e"
    normed = HParams(batch_norm=True, epochs=20)
    assert config_key(normed, seeds=[1, 2], dataset=data, precision="bfloat16") == "b38744e1cdef37e44638"
    moved = HParams(batch_norm=True, epochs=20, bn_after_pool=True)
    assert config_key(moved, seeds=[1, 2], dataset=data, precision="bfloat16") != "b38744e1cdef37e44638"
