"""How close does a training epoch come to what this machine can compute?

    python benchmarks/throughput.py [--quick] [--rounds 3] [--epochs 4]
                                    [--networks paper best] [--variants NAME ...]

For the paper's network (allsearch/spaces/paper-best.yaml), the best confirmed one
(allsearch/spaces/best.yaml) and the laptop's (allsearch/spaces/laptop.yaml; --networks
laptop), built by allsearch's factory and trained the way run_trial trains (fit with the
validation split, validation batch 32, shuffled), on learnable synthetic 100x100 grayscale
images of the real dataset's split sizes (2,280 training, 488 validation images): images per second of an epoch, beside the machine's limit. The limit is measured
here, every round, the best kept: the FLOP/s a large float32 and bfloat16 matmul and
convolution reach with TensorFlow (oneDNN), against the FLOPs an epoch needs, counted from the model's convolutions and dense
layers (a training image: forward, input and weight gradients; a validation image: forward).

Every variant (block order, float32 or mixed bfloat16, XLA, thread counts, oneDNN off, steps
per execution, a cached tf.data input, a larger validation batch; and, for what it costs, the
same network without batch normalization, or with it after each block's pooling or after each
convolution) runs in a process of its
own, since some settings hold for a whole process; variants are interleaved (round 1: A B C,
round 2: A B C, ...) so that load from other work on the machine spreads over all of them;
medians. The first epoch (tracing, compiling) is reported apart; images/s counts epochs 2 and
later. Beside the wall-clock rate, the rate by the process's CPU time (CPU seconds / threads),
which other work on a shared machine disturbs less. Variants far slower than the default
(XLA and oneDNN off) run in the first round only, on 512 images. Validation accuracy after
the last epoch is printed beside each: a variant must still learn the task (a faint square
in the quadrant of the image's class).

--quick: the paper's network, 3 variants, 512 images, 3 epochs, one round (under two
minutes). Key figure, last line: images/s of allsearch's default for the paper's network,
and its fraction of the measured limit.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import subprocess
import sys
import time

from _common import REPO, machine, median, quiet_env

N_TRAIN, N_VAL = 2280, 488  # the real Original dataset's training and validation splits
N_SLOW = 512  # images for the variants that run once

# name -> what differs from allsearch's training as it is (the default: precision auto,
# uint8 pixels made float32 a batch at a time (training.batches.Batches, as run_trial feeds
# them), threads = cores, validation batch 32, oneDNN on, no XLA, one step per call).
VARIANTS: dict[str, dict[str, object]] = {
    "default": {},
    "float32 arrays": {"input": "arrays"},  # the whole split as float32, before 2026-12-04
    "relu before pool": {"pool_before_relu": False},  # the block order before 2026-12-04
    "float32": {"precision": "float32"},
    "float32 relu before pool": {"precision": "float32", "pool_before_relu": False},
    "tf threads": {"threads": 0},           # TensorFlow's own thread counts
    "inter-op 1": {"inter": 1},
    "steps/exec 8": {"steps_per_execution": 8},
    "tf.data cached": {"input": "tf.data"},
    "val batch 256": {"val_batch": 256},
    "xla": {"jit_compile": True, "slow": True},
    "float32 xla": {"precision": "float32", "jit_compile": True, "slow": True},
    "onednn off": {"env": {"TF_ENABLE_ONEDNN_OPTS": "0"}, "slow": True},
    "float32 onednn off": {"precision": "float32", "env": {"TF_ENABLE_ONEDNN_OPTS": "0"},
                           "slow": True},
    # Other networks, not other ways to train one: what batch normalization costs an epoch,
    # and what it costs after each block's pooling (bn_after_pool) or after its convolution.
    "no batch norm": {"hparams": {"batch_norm": False}},
    "bn after pool": {"hparams": {"batch_norm": True, "bn_after_pool": True}},
    "bn after conv": {"hparams": {"batch_norm": True, "bn_after_pool": False}},
}
QUICK_VARIANTS = ("default", "float32 arrays", "float32")
BEST_VARIANTS = ("default", "relu before pool", "float32", "val batch 256", "no batch norm",
                 "bn after pool", "bn after conv")
SPACES = {"paper": "paper-best", "best": "best", "laptop": "laptop"}


# ---------------------------------------------------------------- one variant, in its process

def _images(n: int, seed: int):
    """Learnable synthetic images: uniform noise, and a brighter square in the quadrant of
    the image's class at a random offset."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.random((n, 100, 100, 1), dtype=np.float32) * 0.8
    labels = rng.integers(0, 4, n)
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 2)
        top, left = row * 50 + rng.integers(2, 28), col * 50 + rng.integers(2, 28)
        x[i, top:top + 20, left:left + 20] += 0.25
    return x, labels


def _flops(model) -> tuple[float, float]:
    """(forward FLOPs per image, of which the first weighted layer's): 2 per multiply-add of
    every Conv2D and Dense layer; pooling, activations and normalization are left out."""
    import keras

    total, first = 0.0, None
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw = layer.kernel_size
            flops = 2.0 * h * w * c_out * kh * kw * layer.input.shape[-1]
        elif isinstance(layer, keras.layers.Dense):
            flops = 2.0 * layer.input.shape[-1] * layer.units
        else:
            continue
        first = flops if first is None else first
        total += flops
    return total, first or 0.0


def epoch_flops(model, n_train: int, n_val: int) -> float:
    """FLOPs of one epoch: training images forward, weight gradients and input gradients
    (none for the first layer), validation images forward."""
    forward, first = _flops(model)
    return n_train * (3 * forward - first) + n_val * forward


def _fit_inputs(settings: dict, x, y, x_val, y_val, batch: int) -> dict:
    val_batch = settings.get("val_batch", 32)
    if settings.get("input") == "arrays":
        return {"x": x, "y": y, "batch_size": batch, "shuffle": True,
                "validation_data": (x_val, y_val), "validation_batch_size": val_batch}
    if settings.get("input") != "tf.data":  # the default: what run_trial does
        import numpy as np

        from allsearch.training.batches import Batches

        def pixels(images):  # uint8, as a loaded dataset holds them
            return np.round(images * 255).clip(0, 255).astype(np.uint8)

        return {"x": Batches(pixels(x), y, batch_size=batch, seed=0),
                "validation_data": Batches(pixels(x_val), y_val, batch_size=val_batch)}
    import tensorflow as tf

    train = (tf.data.Dataset.from_tensor_slices((x, y)).cache()
             .shuffle(len(x), seed=0, reshuffle_each_iteration=True)
             .batch(batch).prefetch(tf.data.AUTOTUNE))
    val = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(val_batch).cache()
    return {"x": train, "validation_data": val.prefetch(tf.data.AUTOTUNE)}


class _EpochClock:
    """Wall and CPU seconds of every epoch (a Keras callback's two hooks)."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def begin(self, epoch: int, logs: dict | None = None) -> None:
        self.wall.append(-time.perf_counter())
        self.cpu.append(-time.process_time())

    def end(self, epoch: int, logs: dict | None = None) -> None:
        self.wall[-1] += time.perf_counter()
        self.cpu[-1] += time.process_time()


def run_variant(settings: dict) -> dict:
    """Train one network under one variant's settings; its timings and accuracy."""
    import tensorflow as tf

    from allsearch.core.hardware import available_cores, configure_threads, resolve_precision

    threads = settings.get("threads", available_cores())  # what a study's one worker uses
    if threads:
        configure_threads(threads)
    if "inter" in settings:
        tf.config.threading.set_inter_op_parallelism_threads(settings["inter"])
    import keras

    from allsearch.core.space import load_space
    from allsearch.training.model import build_cnn

    precision, _ = resolve_precision(settings.get("precision", "auto"))
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(
        "mixed_bfloat16" if precision == "bfloat16" else "float32")
    hparams = load_space(SPACES[settings["network"]]).hparams({})
    hparams = dataclasses.replace(hparams, **settings.get("hparams", {}))
    x, labels = _images(settings["n_train"], 1)
    x_val, val_labels = _images(settings["n_val"], 2)
    y, y_val = keras.utils.to_categorical(labels, 4), keras.utils.to_categorical(val_labels, 4)
    model = build_cnn(hparams, 4, input_shape=x.shape[1:],
                      pool_before_relu=settings.get("pool_before_relu", True))
    if settings.get("jit_compile") or settings.get("steps_per_execution"):
        model.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"],
                      jit_compile=bool(settings.get("jit_compile")),
                      steps_per_execution=settings.get("steps_per_execution", 1))
    clock = _EpochClock()
    history = model.fit(**_fit_inputs(settings, x, y, x_val, y_val, hparams.batch_size),
                        epochs=settings["epochs"], verbose=0, callbacks=[
                            keras.callbacks.LambdaCallback(on_epoch_begin=clock.begin,
                                                           on_epoch_end=clock.end)])
    wall, cpu = median(clock.wall[1:]), median(clock.cpu[1:])
    used = threads or available_cores()
    return {"first_epoch_s": clock.wall[0], "epoch_s": wall, "epoch_cpu_s": cpu,
            "images_per_s": settings["n_train"] / wall,
            "images_per_cpu_s": settings["n_train"] / (cpu / used),
            "flops_per_s": epoch_flops(model, settings["n_train"], settings["n_val"]) / wall,
            "flops_per_cpu_s": epoch_flops(model, settings["n_train"], settings["n_val"]) / (cpu / used),
            "val_accuracy": history.history["val_accuracy"][-1], "precision": precision,
            "epoch_wall_s": clock.wall, "jit_compile": bool(model.jit_compile)}


def measure_peak() -> dict[str, float]:
    """FLOP/s of a large matmul and of large convolutions, float32 and bfloat16, here."""
    import tensorflow as tf

    from allsearch.core.hardware import available_cores, configure_threads

    threads = available_cores()
    configure_threads(threads)
    peak: dict[str, float] = {}

    def rate(name: str, fn, flops: float) -> None:
        fn()  # warm-up: oneDNN picks and caches its kernel
        for _ in range(8):
            started, cpu = time.perf_counter(), time.process_time()
            fn().numpy()
            wall, cpu = time.perf_counter() - started, (time.process_time() - cpu) / threads
            peak[name] = max(peak.get(name, 0.0), flops / wall)
            peak[f"{name} by CPU time"] = max(peak.get(f"{name} by CPU time", 0.0),
                                              flops / max(cpu, 1e-9))

    for dtype in (tf.float32, tf.bfloat16):
        a = tf.cast(tf.random.uniform((4096, 4096)), dtype)
        rate(f"matmul 4096 {dtype.name}", lambda a=a: tf.linalg.matmul(a, a), 2.0 * 4096**3)
        # The paper's heaviest convolution (conv2: 48x48x64 -> 32 filters 5x5) and a wide one
        # (64 -> 256 filters 3x3), batch 256.
        for name, (hw, c_in, c_out, k) in {"conv 5x5 64->32": (48, 64, 32, 5),
                                           "conv 3x3 64->256": (48, 64, 256, 3)}.items():
            images = tf.cast(tf.random.uniform((256, hw, hw, c_in)), dtype)
            kernel = tf.cast(tf.random.uniform((k, k, c_in, c_out)), dtype)
            out = hw - k + 1
            rate(f"{name} {dtype.name}", lambda i=images, w=kernel: tf.nn.conv2d(i, w, 1, "VALID"),
                2.0 * 256 * out * out * c_out * k * k * c_in)
    return peak


# ---------------------------------------------------------------- the orchestration

def _child(payload: dict) -> dict:
    env = {**quiet_env(), **payload.get("env", {}), "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(payload)], env=env,
                          capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.exit(f"benchmark step failed: {payload}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _limit(peak: dict[str, float], precision: str, by_cpu: bool = False) -> float:
    # Mixed bfloat16 computes its convolutions and matmuls in bf16: its limit is bf16's.
    suffix = f"{precision} by CPU time" if by_cpu else precision
    return max(v for k, v in peak.items() if k.endswith(suffix))


def _plan(args: argparse.Namespace) -> list[tuple[str, str]]:
    if args.quick:
        return [("paper", name) for name in args.variants or QUICK_VARIANTS]
    return [(net, name) for net in args.networks
            for name in (args.variants or (VARIANTS if net == "paper" else BEST_VARIANTS))]


def _run_rounds(plan: list[tuple[str, str]], rounds: int, epochs: int, n_train: int,
                n_val: int) -> tuple[dict[tuple[str, str], list[dict]], dict[str, float]]:
    """Every variant of the plan once a round, each in its own process; the peak each round."""
    results: dict[tuple[str, str], list[dict]] = {key: [] for key in plan}
    peak: dict[str, float] = {}
    for i in range(rounds):
        # The limit is measured every round and the best kept: other work on a shared machine
        # only ever lowers it.
        for key, value in _child({"peak": True}).items():
            peak[key] = max(value, peak.get(key, 0.0))
        for net, name in plan:
            slow = bool(VARIANTS[name].get("slow"))
            if slow and i:
                continue
            settings = {"network": net, "epochs": 2 if slow else epochs,
                        "n_train": min(N_SLOW, n_train) if slow else n_train,
                        "n_val": n_val, **VARIANTS[name]}
            result = _child(settings)
            results[(net, name)].append(result)
            print(f"round {i + 1} {net:5s} {name:24s} {result['images_per_s']:7.1f} images/s "
                  f"({result['images_per_cpu_s']:.1f} by CPU time; epochs "
                  f"{' '.join(f'{s:.1f}' for s in result['epoch_wall_s'])} s; "
                  f"val acc {result['val_accuracy']:.3f})", flush=True)
    return results, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="paper's network, 3 variants, 512 images, 3 epochs, 1 round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--networks", nargs="+", choices=sorted(SPACES), default=["paper", "best"])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=None,
                        help="for every network (default: all for the paper's, a subset for best)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        payload = json.loads(args.child)
        result = measure_peak() if payload.get("peak") else run_variant(payload)
        print("RESULT " + json.dumps(result), flush=True)
        return
    rounds, epochs = (1, 3) if args.quick else (args.rounds, args.epochs)
    n_train, n_val = (512, 128) if args.quick else (N_TRAIN, N_VAL)
    plan = _plan(args)
    print(f"machine: {machine()}; {datetime.datetime.now().isoformat(timespec='minutes')}",
          flush=True)
    results, peak = _run_rounds(plan, rounds, epochs, n_train, n_val)
    print("measured peak (best of every round): " + ", ".join(
        f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peak.items()), flush=True)
    _table(results, peak, n_train, n_val, epochs, rounds)
    # The key figure: the paper's network under allsearch's default, else the first measured.
    key = ("paper", "default") if ("paper", "default") in results else next(iter(results))
    default = results[key]
    ips = median([r["images_per_s"] for r in default])
    fraction = median([r["flops_per_s"] for r in default]) / _limit(peak, default[0]["precision"])
    cpu_ips = median([r["images_per_cpu_s"] for r in default])
    cpu_fraction = (median([r["flops_per_cpu_s"] for r in default])
                    / _limit(peak, default[0]["precision"], True))
    what = "paper's network, allsearch's default" if key == ("paper", "default") else " ".join(key)
    print(f"{what} ({default[0]['precision']}): {ips:.0f} images/s, "
          f"{fraction:.3f} of the measured limit (by CPU time: {cpu_ips:.0f}, {cpu_fraction:.3f})")


def _table(results: dict, peak: dict, n_train: int, n_val: int, epochs: int, rounds: int) -> None:
    print(f"\n{n_train} training + {n_val} validation images, epochs 2-{epochs} of each fit, "
          f"median of {rounds} round(s) (*: one round, {N_SLOW} images, epoch 2 of 2)")
    print("| network | variant | precision | images/s | epoch s | first epoch s | val acc "
          "| GFLOP/s | fraction of limit | by CPU time: images/s, fraction |\n"
          "|---|---|---|---|---|---|---|---|---|---|")
    for (net, name), runs in results.items():
        precision = runs[0]["precision"]
        flops = median([r["flops_per_s"] for r in runs])
        cpu_fraction = median([r["flops_per_cpu_s"] for r in runs]) / _limit(peak, precision, True)
        mark = "*" if VARIANTS[name].get("slow") else ""
        print(f"| {net} | {name}{mark} | {precision} "
              f"| {median([r['images_per_s'] for r in runs]):.0f} "
              f"| {median([r['epoch_s'] for r in runs]):.2f} "
              f"| {median([r['first_epoch_s'] for r in runs]):.2f} "
              f"| {median([r['val_accuracy'] for r in runs]):.3f} | {flops / 1e9:.0f} "
              f"| {flops / _limit(peak, precision):.3f} "
              f"| {median([r['images_per_cpu_s'] for r in runs]):.0f}, {cpu_fraction:.3f} |")
    print()


if __name__ == "__main__":
    main()
