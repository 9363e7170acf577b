"""How fast does the paper's network predict: one image at a time, and a whole test split?

    python benchmarks/latency.py [--quick] [--data PATH] [--rounds 3]

Builds the paper's network with allsearch's factory (prediction costs the same whatever the
weights, so it is not trained) and measures, with the code that times every trial
(allsearch.training.trial): the p50/p95 of one-image predictions after a warm-up, and the time to
predict the whole test split (483 images on the real data; without --data, random images of
that count) at Keras' default batch of 32, which is what the paper's Table 1 times. float32 and
bfloat16 alternate. Then the noise of the latency objective (--objectives latency_ms_p50):
the same model measured --repeat times in a row, as a study measures each trial; the spread of
those p50s is what a difference between two trials must exceed to mean anything.
--quick: one round, 3 repeats. Key figure, last line: the test-split time beside the paper's
1.98 s.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _common import PAPER_TEST_PREDICTION_S, machine, median  # noqa: E402

from allsearch.core.space import HParams  # noqa: E402
from allsearch.training.model import build_cnn  # noqa: E402
from allsearch.training.trial import latency_ms, timed_predict, trace_predict  # noqa: E402


def measure(x: np.ndarray, precision: str) -> tuple[float, float, float]:
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    model = build_cnn(HParams(), 4, input_shape=x.shape[1:])
    trace_predict(model, x)  # trace outside the timings, as run_trial does
    _, split_s = timed_predict(model, x)
    p50, p95 = latency_ms(model, x)
    keras.mixed_precision.set_global_policy("float32")
    return split_s, p50, p95


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round")
    parser.add_argument("--data", default=None, help="dataset folder (default: random images)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=10,
                        help="measurements of one model's p50 latency, for its spread")
    args = parser.parse_args()
    if args.data:
        from allsearch.data.dataset import load_dataset
        from allsearch.data.images import to_network_input

        x = to_network_input(load_dataset(args.data).x_test)  # uint8 pixels -> float32 [0, 1]
    else:
        x = np.random.default_rng(0).random((483, 100, 100, 1), dtype=np.float32)
    rounds = 1 if args.quick else args.rounds
    results: dict[str, list[tuple[float, float, float]]] = {"float32": [], "bfloat16": []}
    for i in range(rounds):
        for precision in results:
            results[precision].append(measure(x, precision))
            split_s, p50, p95 = results[precision][-1]
            print(f"round {i + 1} {precision}: test split {split_s:.2f} s, one image p50 "
                  f"{p50:.1f} ms / p95 {p95:.1f} ms")
    repeats = 3 if args.quick else args.repeat
    keras.backend.clear_session()
    model = build_cnn(HParams(), 4, input_shape=x.shape[1:])
    trace_predict(model, x)
    p50s = [latency_ms(model, x)[0] for _ in range(repeats)]
    print(f"one model's p50 over {repeats} measurements (float32): mean {np.mean(p50s):.2f} ms, "
          f"sd {np.std(p50s, ddof=1):.2f} ms, range {min(p50s):.2f}-{max(p50s):.2f} ms")
    print(f"machine: {machine()}")
    summary = []
    for precision, values in results.items():
        split_s = median([v[0] for v in values])
        p50, p95 = median([v[1] for v in values]), median([v[2] for v in values])
        summary.append(f"{precision} {split_s:.2f} s (p50 {p50:.1f} ms, p95 {p95:.1f} ms)")
    print(f"{len(x)} test images, batch 32, median of {rounds}: " + "; ".join(summary)
          + f"; paper {PAPER_TEST_PREDICTION_S:.2f} s")


if __name__ == "__main__":
    main()
