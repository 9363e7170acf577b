"""Optuna or KerasTuner: which finds a good configuration sooner, on the same budget?

    python benchmarks/engines.py [--quick] [--data PATH] [--budget 1800]

Runs allsearch/spaces/paper.yaml three times with the same wall-clock budget (--timeout) on the same
data: Optuna TPE with median pruning (allsearch's default), KerasTuner Hyperband, and
KerasTuner random search; every engine trains the paper's baseline first, through the same
trial code. Reports each engine's trials, best validation accuracy (and that trial's test
accuracy), and the time to first reach the paper's 0.80 validation accuracy, counted from the
study's start, with and without the shared baseline trial. --quick: synthetic images, a small
space and a 15 s budget each. Key figure, last line: best validation accuracy per engine.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from _common import PAPER_VAL_ACCURACY, isolated_workdir, machine, synthetic_data  # noqa: E402

QUICK_SPACE = """name: engines-quick
objective: val_accuracy
params:
  epochs: {type: int, low: 1, high: 3}
  batch_size: {type: categorical, choices: [16, 32]}
  conv_layers: {type: int, low: 1, high: 3}
fixed: {loss: categorical_crossentropy, dense_units: 32}
baseline: {epochs: 2, batch_size: 32, conv_layers: 2}
"""
ENGINES = (("optuna-tpe-median", {"engine": "optuna"}),
           ("kt-hyperband", {"engine": "keras-tuner", "tuner": "hyperband"}),
           ("kt-random", {"engine": "keras-tuner", "tuner": "random"}))


def first_reach(runs, threshold: float, *, skip_baseline: bool) -> float | None:
    """Seconds from the study's first trial start to the end of the first trial at or above
    `threshold` validation accuracy (None: never)."""
    start = runs["start_time"].min()
    done = runs[runs["tags.state"] == "COMPLETE"].sort_values("end_time")
    if skip_baseline:
        done = done[done["tags.trial_number"] != "0"]
    hits = done[done["metrics.val_accuracy"] >= threshold]
    return None if hits.empty else (hits["end_time"].iloc[0] - start).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="synthetic data, 15 s each")
    parser.add_argument("--data", default=None, help="dataset folder (default: synthetic)")
    parser.add_argument("--budget", type=float, default=1800, help="seconds per engine")
    args = parser.parse_args()
    from allsearch import study
    from allsearch.core import cli
    from allsearch.tracking.tracking import Tracker

    cli.quiet_libraries()
    workdir = isolated_workdir("engines")
    space, budget = "paper", args.budget
    if args.quick:
        space, budget = str(workdir / "quick.yaml"), 15.0
        Path(space).write_text(QUICK_SPACE)
    data = args.data or str(synthetic_data(workdir / "synthetic", per_class=40))
    tracking = f"sqlite:///{workdir}/mlflow.db"
    best = {}
    for label, engine in ENGINES:
        started = time.perf_counter()
        study.run(trials=1000, timeout=budget, space=space, data=data, study_name=label,
                  storage=f"sqlite:///{workdir}/optuna.db", tracking_uri=tracking, seed=0,
                  log_models="none", trials_per_process=0, progress=False, **engine)
        elapsed = time.perf_counter() - started
        tracker = Tracker(label, tracking_uri=tracking)
        runs = tracker.runs_frame(f"tags.`mlflow.parentRunId` = '{tracker.find_parent(label)}'")
        complete = runs[runs["tags.state"] == "COMPLETE"]
        top = complete.loc[complete["metrics.val_accuracy"].idxmax()]
        best[label] = float(top["metrics.val_accuracy"])
        reach = [first_reach(runs, PAPER_VAL_ACCURACY, skip_baseline=s) for s in (False, True)]
        shown = ["never" if r is None else f"{r:.0f} s" for r in reach]
        print(f"{label}: {len(runs)} trials ({len(complete)} complete) in {elapsed:.0f} s; best val "
              f"{best[label]:.3f} (test {float(top['metrics.test_accuracy']):.3f}, trial "
              f"{top['tags.trial_number']}); first val >= {PAPER_VAL_ACCURACY:.2f} after "
              f"{shown[0]} (without the baseline trial: {shown[1]})")
    print(f"machine: {machine()}")
    print(f"data: {data}; space {space}; budget {budget:.0f} s per engine, seed 0")
    print("best validation accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in best.items()))


if __name__ == "__main__":
    main()
