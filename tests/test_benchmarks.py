"""Every benchmark runs in its --quick mode and ends with its key figure (timings are not
asserted: they belong to benchmarks/README.md, measured on a named machine)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
# benchmark -> what its last line must say
KEY_FIGURES = {
    "overhead": r"^overhead ratio allsearch / plain Keras \(median of 1\): \d+\.\d{3}$",
    "data": r"^peak resident memory per image, one-epoch study of \d+ images: \d+\.\d KB over",
    "precision": r"^bfloat16 speed-up per epoch \(median of 1\): \d+\.\d+x",
    "latency": r"^483 test images, batch 32, median of 1: float32 \d+\.\d+ s .*paper 1\.98 s$",
    "pruning": r"^median: \d+ epochs, best val \d\.\d{3}; none: \d+ epochs, best val \d\.\d{3}$",
    "workers": r"^trials per hour: 1 worker \d+, 2 workers \d+ \(ratio \d+\.\d+\)$",
    "engines": r"^best validation accuracy: optuna-tpe-median \d\.\d{3}, kt-hyperband \d\.\d{3}, kt-random \d\.\d{3}$",
    "memory": r"^peak RSS growth trial 1 -> 4 \(default\): [+-]\d+ MB$",
    "startup": r"^seconds to the first progress line \(median of 1\): \d+\.\d$",
    "efficiency": r"^training share \(seconds in model\.fit / study wall seconds\): \d\.\d{3}$",
    "neighbours": r"^suggested --split blocks --block-size \d+ --embargo \d+ \(histogram at the "
                  r"random-pair level from distance \d+\)$",
    "throughput": r"^paper's network, allsearch's default \((bfloat16|float32)\): \d+ images/s, "
                  r"\d\.\d{3} of the measured limit \(by CPU time: \d+, \d\.\d{3}\)$",
    "peer": r"^wall time ratio allsearch / peer \(median of 1\): \d+\.\d{3}$",
    "laptop": r"^wall time ratio laptop / paper-best \(median of 1\): \d+\.\d{3}$",
}


# Run by hand, not in the suite: their quick modes train whole studies or configurations,
# several side by side (12 s to 3 min each on 2 cores: `python benchmarks/NAME.py --quick`),
# which the suite's 20 minutes cannot carry; what they exercise (the engines, workers, pruners,
# memory recycling, the data pipeline, precision, latency) is tested on tiny data elsewhere.
# The suite runs the quick mode of the one that trains nothing and checks that every other one
# parses its flags; their key figures follow the patterns above when run by hand.
IN_SUITE = {"neighbours"}
BY_HAND = set(KEY_FIGURES) - IN_SUITE


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", sorted(IN_SUITE))
def test_benchmark_quick_mode_runs(name: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(BENCHMARKS / f"{name}.py"), "--quick"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=580,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert re.search(KEY_FIGURES[name], last), last


@pytest.mark.parametrize("name", sorted(BY_HAND))
def test_a_benchmark_run_by_hand_still_parses_its_flags(name: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(BENCHMARKS / f"{name}.py"), "--help"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "--quick" in done.stdout


def test_every_benchmark_is_checked() -> None:
    scripts = {p.stem for p in BENCHMARKS.glob("*.py") if not p.stem.startswith("_")}
    # coordination.py needs PostgreSQL and an MLflow server: tests/test_coordination.py runs it;
    # plain_keras.py and peer_script.py are what overhead.py and peer.py time.
    assert scripts - {"plain_keras", "peer_script", "coordination"} == set(KEY_FIGURES)
