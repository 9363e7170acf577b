"""Does memory grow from trial to trial? Peak RSS of the process that trained each trial.

    python benchmarks/memory.py [--quick] [--data PATH] [--trials 50]

Runs the same study of 1-epoch trials of the paper's network (allsearch/spaces/smoke.yaml) twice:
  unbounded  every trial in one process, no memory limit (--worker-memory-mb 0): Keras'
             session is cleared and garbage collected between trials, yet TensorFlow keeps
             some memory after every fit;
  default    a process takes trials until its resident memory has grown --worker-memory-mb
             (256 MB) past its first trial, then a fresh worker process takes over.
Reports each trial's peak resident memory (the runs' peak_rss_mb: ru_maxrss of the process
that trained it); each study runs in a fresh process. --quick: synthetic images, 4 trials.
The key figure, printed last, is the largest growth of peak RSS over trial 1 under the
default.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def run_study(label: str, workdir: Path, data: str, trials: int) -> None:
    """One of the two studies, in this process (a fresh one per study: see main)."""
    from allsearch import study
    from allsearch.core import cli

    cli.quiet_libraries()
    settings = {"worker_memory_mb": 0} if label == "unbounded" else {}
    study.run(trials=trials, space="smoke", data=data, study_name=f"memory-{label}",
              storage=f"sqlite:///{workdir}/optuna.db", tracking_uri=f"sqlite:///{workdir}/mlflow.db",
              pruner="none", log_models="none", progress=False, retrain_duplicates=True, **settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="synthetic data, 4 trials")
    parser.add_argument("--data", default=None, help="dataset folder (default: synthetic)")
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--run", nargs=3, metavar=("LABEL", "WORKDIR", "DATA"),
                        help=argparse.SUPPRESS)  # one study in a process of its own
    args = parser.parse_args()
    trials = 4 if args.quick else args.trials
    if args.run:
        label, workdir, data = args.run
        run_study(label, Path(workdir), data, trials)
        return
    from mlflow.tracking import MlflowClient

    workdir = Path(tempfile.mkdtemp(prefix="allsearch-memory-"))
    data = args.data
    if data is None:
        from allsearch.data.synthetic import write_dataset

        data = str(write_dataset(workdir / "synthetic", per_class=30, duplicate=False, junk=False))
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    peaks = {}
    for label in ("unbounded", "default"):
        # Each study in a fresh process, as a user runs it: the second must not start with
        # the first one's memory.
        started = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--trials", str(trials), "--run", label,
                        str(workdir), data], check=True)
        seconds = time.perf_counter() - started
        experiment = client.get_experiment_by_name(f"memory-{label}").experiment_id
        runs = sorted((r for r in client.search_runs([experiment])
                       if r.data.tags.get("allsearch.role") == "trial"),
                      key=lambda r: int(r.data.tags["trial_number"]))
        peaks[label] = [r.data.metrics["peak_rss_mb"] for r in runs]
        workers = len({r.data.tags.get("worker") for r in runs})
        print(f"{label}: peak RSS after trial 1 {peaks[label][0]:.0f} MB, after trial {trials} "
              f"{peaks[label][-1]:.0f} MB (largest {max(peaks[label]):.0f} MB); "
              f"{workers} process(es); {seconds:.0f} s", flush=True)
    print(f"data: {data}; {trials} trials of 1 epoch (allsearch/spaces/smoke.yaml)")
    print(f"peak RSS growth trial 1 -> {trials} (unbounded): "
          f"{max(peaks['unbounded']) - peaks['unbounded'][0]:+.0f} MB")
    print(f"peak RSS growth trial 1 -> {trials} (default): "
          f"{max(peaks['default']) - peaks['default'][0]:+.0f} MB")


if __name__ == "__main__":
    main()
