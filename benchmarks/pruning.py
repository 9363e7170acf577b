"""What does each pruner save, and what does it cost in accuracy?

    python benchmarks/pruning.py [--quick] [--data PATH] [--trials 20]
        [--pruners median hyperband successive_halving none] [--sampler-seeds 0 1]

Runs the same seeded study (TPE, allsearch/spaces/paper.yaml, the paper's baseline first) once per
pruner and sampler seed, and counts the epochs each trained in all and the best validation
accuracy each found. Trials run in this process. --quick: synthetic images, 5 trials of a
small space (1-4 epochs), sampler seed 0, the median pruner and none. Key figure, last line: per pruner, epochs trained
(summed over the seeds) and the best validation accuracy of each seed's study.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from _common import isolated_workdir, machine, synthetic_data  # noqa: E402

from allsearch.core.config import PRUNERS  # noqa: E402

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
    from allsearch.tracking.tracking import Tracker

    tracker = Tracker(study_name, tracking_uri=tracking_uri)
    runs = tracker.runs_frame(f"tags.`mlflow.parentRunId` = '{tracker.find_parent(study_name)}'")
    if "tags.duplicate_of" in runs:
        runs = runs[runs["tags.duplicate_of"].isna()]
    return int(runs["metrics.epochs_run"].fillna(0).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="synthetic data, 5 small trials")
    parser.add_argument("--data", default=None, help="dataset folder (default: synthetic)")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--pruners", nargs="+", default=None, choices=PRUNERS,
                        help="the pruners to compare (default: all; --quick: median, none)")
    parser.add_argument("--sampler-seeds", type=int, nargs="+", default=[0, 1],
                        help="one study per pruner and seed (default: 0 1)")
    parser.add_argument("--precision", default="auto", choices=("auto", "float32", "bfloat16"))
    parser.add_argument("--workdir", default=None,
                        help="folder of the stores (default: a new temporary one); the same "
                             "folder again resumes every study")
    args = parser.parse_args()
    from allsearch import study
    from allsearch.core import cli

    cli.quiet_libraries()
    workdir = isolated_workdir("pruning", args.workdir)
    space = "paper"
    if args.quick:
        space = str(workdir / "quick.yaml")
        Path(space).write_text(QUICK_SPACE)
    trials = 5 if args.quick else args.trials
    seeds = [0] if args.quick else args.sampler_seeds
    pruners = args.pruners or (["median", "none"] if args.quick else list(PRUNERS))
    data = args.data or str(synthetic_data(workdir / "synthetic", per_class=24))
    results: dict[str, list[tuple[int, float]]] = {}
    for seed in seeds:
        for pruner in pruners:
            name = f"pruning-{pruner}-seed{seed}"
            started = time.perf_counter()
            done = study.run(trials=trials, space=space, data=data, study_name=name,
                             storage=f"sqlite:///{workdir}/optuna.db",
                             tracking_uri=f"sqlite:///{workdir}/mlflow.db", pruner=pruner,
                             seed=seed, log_models="none", precision=args.precision,
                             trials_per_process=0, progress=False)
            epochs = epochs_trained(name, f"sqlite:///{workdir}/mlflow.db")
            pruned = sum(t.state.name == "PRUNED" for t in done.trials)
            results.setdefault(pruner, []).append((epochs, done.best_value))
            print(f"seed {seed}, pruner {pruner}: {epochs} epochs trained, {pruned} of {trials} "
                  f"trials pruned, best val_accuracy {done.best_value:.3f}, "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
    print(f"machine: {machine()}")
    print(f"data: {data}; space {space}; {trials} trials, TPE seeds {seeds}")
    print("; ".join(f"{pruner}: {sum(e for e, _ in rows)} epochs, best val "
                    + "/".join(f"{b:.3f}" for _, b in rows) for pruner, rows in results.items()))


if __name__ == "__main__":
    main()
