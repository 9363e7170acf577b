"""Does a study spend its time training? The training share, and where the rest goes.

    python benchmarks/efficiency.py [--quick] [--data PATH] [--trials 8] [--compare]

Runs a seeded N-trial study of the paper's knobs with 3-5 epochs per trial (pruning off, so
every trial trains the same in each run) as a whole process, `python -m allsearch.study`,
timed from start to exit, pixel cache warm. The training share is the seconds inside
model.fit (the runs' time_fit_s) over the study's wall seconds. The per-trial breakdown is
what the trial code itself logged on every run (time_*_s metrics: process start, data load,
build, fit, evaluation and prediction timing, logging, model logging; the rest of the wall
time is the study's own: opening stores, sampling, the parent run's summary). A run's
figures and tables are written in the background while the next trial trains:
their seconds (time_finish_s) are shown apart, not counted outside fit.
--compare also runs the same study with a fresh worker process per trial
(--trials-per-process 1, the earlier default), side by side.
--quick: synthetic images, 8 trials of 1-2 epochs. Key figure, last line: the training share.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from _common import isolated_workdir, machine, synthetic_data, timed_run

SPACE = """name: efficiency
objective: val_accuracy
params:
  epochs:      {{type: int, low: {low}, high: {high}}}
  batch_size:  {{type: categorical, choices: [32, 64]}}
  loss:        {{type: categorical, choices: [categorical_crossentropy, binary_crossentropy]}}
  conv_layers: {{type: int, low: 2, high: 4}}
fixed: {{learning_rate: 0.001, dropout: 0.5, dense_units: 128, features: pixels}}
baseline: {{epochs: {high}, batch_size: 64, loss: categorical_crossentropy, conv_layers: 3}}
"""
STAGES = ("time_process_start_s", "time_data_load_s", "time_build_s", "time_fit_s",
          "time_evaluate_s", "time_logging_s", "time_model_logging_s")
BACKGROUND = "time_finish_s"  # figures, tables, end state: written while the next trial trains
PREDICTION = "test_prediction_time_s"  # the paper's figure, inside the evaluate stage


def measure(label: str, workdir: Path, space: Path, data: str, trials: int,
            extra: list[str]) -> tuple[float, dict[str, float], int]:
    """(wall seconds, summed seconds per stage, trials trained) of one whole study run."""
    from mlflow.tracking import MlflowClient

    tracking = f"sqlite:///{workdir}/mlflow-{label}.db"
    wall = timed_run(["-m", "allsearch.study", "--space", str(space), "--trials", str(trials),
                      "--data", data, "--study-name", label, "--pruner", "none", "--seed", "0",
                      "--storage", f"sqlite:///{workdir}/optuna-{label}.db",
                      "--tracking-uri", tracking, "--no-progress", *extra], cwd=workdir)
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name(label).experiment_id
    runs = [r for r in client.search_runs([experiment])
            if r.data.tags.get("allsearch.role") == "trial" and "duplicate_of" not in r.data.tags]
    sums = {stage: sum(r.data.metrics.get(stage, 0.0) for r in runs)
            for stage in (*STAGES, BACKGROUND, PREDICTION)}
    return wall, sums, len(runs)


def report(label: str, wall: float, sums: dict[str, float], trained: int, trials: int) -> float:
    share = sums["time_fit_s"] / wall
    print(f"{label}: {trials} trials ({trained} trained, the others re-proposals recorded "
          f"without training) in {wall:.1f} s; inside model.fit {sums['time_fit_s']:.1f} s: "
          f"training share {share:.3f}")
    accounted = sum(sums[stage] for stage in STAGES)
    for stage in STAGES:
        print(f"  {stage[5:-2]:<16} {sums[stage]:7.1f} s  ({sums[stage] / max(1, trained):5.2f} s per trial)")
        if stage == "time_evaluate_s":
            print(f"    of it, timed  {sums[PREDICTION]:7.1f} s  ({sums[PREDICTION] / max(1, trained):5.2f} "
                  f"s per trial: the test split's prediction, the paper's prediction time)")
    print(f"  {'(finish)':<16} {sums[BACKGROUND]:7.1f} s  ({sums[BACKGROUND] / max(1, trained):5.2f} "
          f"s per trial, in the background while the next trial trains)")
    print(f"  {'study (rest)':<16} {wall - accounted:7.1f} s  (stores, sampling, summary, "
          f"process exit)")
    return share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="synthetic data, 8 short trials")
    parser.add_argument("--data", default=None, help="dataset folder (default: synthetic)")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--compare", action="store_true",
                        help="also run with a fresh process per trial (the earlier default)")
    args = parser.parse_args()
    workdir = isolated_workdir("efficiency")
    data = str(Path(args.data).resolve()) if args.data else str(
        synthetic_data(workdir / "synthetic", per_class=60))
    low, high = (1, 2) if args.quick else (3, 5)
    space = workdir / "efficiency.yaml"
    space.write_text(SPACE.format(low=low, high=high))
    timed_run(["-m", "allsearch.data", data], cwd=workdir)  # warm the pixel cache

    print(f"machine: {machine()}")
    print(f"data: {data}; {args.trials} trials of {low}-{high} epochs, seed 0, no pruning")
    runs = [("default", [])]
    if args.compare:
        runs.insert(0, ("fresh-process-per-trial", ["--trials-per-process", "1"]))
    shares = {}
    for label, extra in runs:
        wall, sums, trained = measure(label, workdir, space, data, args.trials, extra)
        shares[label] = report(label, wall, sums, trained, args.trials)
    if args.compare:
        print(f"training share, fresh process per trial: {shares['fresh-process-per-trial']:.3f}")
    print(f"training share (seconds in model.fit / study wall seconds): "
          f"{statistics.fmean([shares['default']]):.3f}")


if __name__ == "__main__":
    main()
