"""What does the median pruner save, and what does it cost in accuracy?

    python benchmarks/pruning.py [--quick] [--data PATH] [--trials 20]

Runs the same seeded study twice (TPE seed 0, search/paper.yaml, the paper's baseline first),
once with the median pruner (allsearch's default) and once without, and counts the epochs
each trained in all and the best validation accuracy each found. Trials run in this process.
--quick: synthetic images, 8 trials of a small space (1-4 epochs). Key figure, last line:
epochs trained and best validation accuracy, with and without pruning.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from _common import isolated_workdir, machine, synthetic_data  # noqa: E402

QUICK_SPACE = """name: pruning-quick
objective: val_accuracy
params:
  epochs: {type: int, low: 1, high: 4}
  batch_size: {type: categorical, choices: [16, 32]}
  conv_layers: {type: int, low: 1, high: 3}
fixed: {loss: categorical_crossentropy, dense_units: 32}
"""


def epochs_trained(study_name: str, tracking_uri: str) -> int:
    """Epochs the study's trials trained, read from their MLflow runs (a pruned run logs the
    epochs it ran; a re-proposed configuration, tagged duplicate_of, trained none)."""
    from allsearch.tracking import Tracker

    tracker = Tracker(study_name, tracking_uri=tracking_uri)
    runs = tracker.runs_frame(f"tags.`mlflow.parentRunId` = '{tracker.find_parent(study_name)}'")
    if "tags.duplicate_of" in runs:
        runs = runs[runs["tags.duplicate_of"].isna()]
    return int(runs["metrics.epochs_run"].fillna(0).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="synthetic data, 8 small trials")
    parser.add_argument("--data", default=None, help="dataset folder (default: synthetic)")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--precision", default="auto", choices=("auto", "float32", "bfloat16"))
    parser.add_argument("--workdir", default=None,
                        help="folder of the stores (default: a new temporary one); the same "
                             "folder again resumes both studies")
    args = parser.parse_args()
    from allsearch import cli, study

    cli.quiet_libraries()
    workdir = isolated_workdir("pruning", args.workdir)
    space = "paper"
    if args.quick:
        space = str(workdir / "quick.yaml")
        Path(space).write_text(QUICK_SPACE)
    trials = 8 if args.quick else args.trials
    data = args.data or str(synthetic_data(workdir / "synthetic", per_class=40))
    results = {}
    for pruner in ("median", "none"):
        started = time.perf_counter()
        done = study.run(trials=trials, space=space, data=data, study_name=f"pruning-{pruner}",
                         storage=f"sqlite:///{workdir}/optuna.db",
                         tracking_uri=f"sqlite:///{workdir}/mlflow.db", pruner=pruner, seed=0,
                         log_models="none", precision=args.precision, trials_per_process=0,
                         progress=False)
        epochs = epochs_trained(f"pruning-{pruner}", f"sqlite:///{workdir}/mlflow.db")
        pruned = sum(t.state.name == "PRUNED" for t in done.trials)
        results[pruner] = (epochs, done.best_value, pruned, time.perf_counter() - started)
        print(f"pruner {pruner}: {epochs} epochs trained, {pruned} of {trials} trials pruned, "
              f"best val_accuracy {done.best_value:.3f}, {results[pruner][3]:.0f} s")
    print(f"machine: {machine()}")
    print(f"data: {data}; space {space}; {trials} trials, TPE seed 0")
    (e_on, best_on, _, _), (e_off, best_off, _, _) = results["median"], results["none"]
    print(f"median pruner: {e_on} epochs, best val {best_on:.3f}; no pruner: {e_off} epochs, "
          f"best val {best_off:.3f} ({e_on / e_off:.2f}x the epochs)")


if __name__ == "__main__":
    main()
