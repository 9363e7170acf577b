"""Does memory grow from trial to trial? Peak RSS of the process that trained each trial.

    python benchmarks/memory.py [--quick] [--data PATH] [--trials 50]

Runs the same study of 1-epoch trials of the paper's network (search/smoke.yaml) twice:
  unbounded  every trial in one process, no memory limit (--worker-memory-mb 0): Keras'
             session is cleared and garbage collected between trials, yet TensorFlow keeps
             some memory after every fit;
  default    a process takes trials until its resident memory has grown --worker-memory-mb
             (256 MB) past its first trial, then a fresh worker process takes over.
Reports each trial's peak resident memory (the runs' peak_rss_mb: ru_maxrss of the process
that trained it). --quick: synthetic images, 4 trials. The key figure, printed last, is the
largest growth of peak RSS over trial 1 under the default.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="synthetic data, 4 trials")
    parser.add_argument("--data", default=None, help="dataset folder (default: synthetic)")
    parser.add_argument("--trials", type=int, default=50)
    args = parser.parse_args()
    from mlflow.tracking import MlflowClient

    from allsearch import cli, study

    cli.quiet_libraries()
    workdir = Path(tempfile.mkdtemp(prefix="allsearch-memory-"))
    data = args.data
    if data is None:
        from allsearch.synthetic import write_dataset

        data = str(write_dataset(workdir / "synthetic", per_class=30, duplicate=False, junk=False))
    trials = 4 if args.quick else args.trials
    tracking = f"sqlite:///{workdir}/mlflow.db"
    common = dict(trials=trials, space="smoke", data=data, storage=f"sqlite:///{workdir}/optuna.db",
                  tracking_uri=tracking, pruner="none", log_models="none", progress=False,
                  retrain_duplicates=True)
    client = MlflowClient(tracking)
    peaks = {}
    for label, limit in (("unbounded", 0), ("default", None)):
        started = time.perf_counter()
        settings = {"worker_memory_mb": limit} if limit is not None else {}
        done = study.run(study_name=f"memory-{label}", **common, **settings)
        seconds = time.perf_counter() - started
        peaks[label] = [client.get_run(t.user_attrs["mlflow_run_id"]).data.metrics["peak_rss_mb"]
                        for t in done.trials]
        workers = len({t.user_attrs.get("worker") for t in done.trials})
        print(f"{label}: peak RSS after trial 1 {peaks[label][0]:.0f} MB, after trial {trials} "
              f"{peaks[label][-1]:.0f} MB (largest {max(peaks[label]):.0f} MB); "
              f"{workers} process(es); {seconds:.0f} s")
    print(f"data: {data}; {trials} trials of 1 epoch (search/smoke.yaml)")
    print(f"peak RSS growth trial 1 -> {trials} (unbounded): "
          f"{max(peaks['unbounded']) - peaks['unbounded'][0]:+.0f} MB")
    print(f"peak RSS growth trial 1 -> {trials} (default): "
          f"{max(peaks['default']) - peaks['default'][0]:+.0f} MB")


if __name__ == "__main__":
    main()
