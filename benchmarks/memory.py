"""Does memory grow from trial to trial? Peak RSS after each trial of a study.

    python benchmarks/memory.py [--quick] [--data PATH] [--trials 20]

Runs the same study of 1-epoch trials of the paper's network (search/smoke.yaml) twice:
  in-process  every trial in this process (--trials-per-process 0): Keras' session is cleared
              and garbage collected between trials, yet TensorFlow keeps tens of MB per fit;
  recycled    the default: a fresh worker process per trial (--trials-per-process 1).
Reports the peak resident memory (ru_maxrss) of the process that trained, after trial 1 and
after the last trial. --quick: synthetic images, 4 trials. The key figure, printed last, is
the growth of peak RSS from trial 1 to the last trial under the default.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="synthetic data, 4 trials")
    parser.add_argument("--data", default=None, help="dataset folder (default: synthetic)")
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    from mlflow.tracking import MlflowClient

    from allsearch import cli, study

    cli.quiet_libraries()
    workdir = Path(tempfile.mkdtemp(prefix="allsearch-memory-"))
    data = args.data
    if data is None:
        from conftest import write_dataset

        data = str(write_dataset(workdir / "synthetic", per_class=30, duplicate=False, junk=False))
    trials = 4 if args.quick else args.trials
    tracking = f"sqlite:///{workdir}/mlflow.db"
    common = dict(trials=trials, space="smoke", data=data, storage=f"sqlite:///{workdir}/optuna.db",
                  tracking_uri=tracking, pruner="none", log_models="none", progress=False)

    in_process: list[float] = []
    started = time.perf_counter()
    study.run(study_name="memory-in-process", trials_per_process=0,
              trial_callbacks=[lambda s, t: in_process.append(peak_mb())], **common)
    in_process_s = time.perf_counter() - started

    started = time.perf_counter()
    recycled_study = study.run(study_name="memory-recycled", **common)
    recycled_s = time.perf_counter() - started
    client = MlflowClient(tracking)
    recycled = [client.get_run(t.user_attrs["mlflow_run_id"]).data.metrics["peak_rss_mb"]
                for t in recycled_study.trials]

    print(f"data: {data}; {trials} trials of 1 epoch (search/smoke.yaml)")
    print(f"in-process: peak RSS after trial 1 {in_process[0]:.0f} MB, after trial {trials} "
          f"{in_process[-1]:.0f} MB ({in_process[-1] - in_process[0]:+.0f} MB); {in_process_s:.0f} s")
    print(f"recycled:   peak RSS after trial 1 {recycled[0]:.0f} MB, after trial {trials} "
          f"{recycled[-1]:.0f} MB (largest {max(recycled):.0f} MB); {recycled_s:.0f} s")
    print(f"peak RSS growth trial 1 -> {trials} (default, recycled): "
          f"{max(recycled) - recycled[0]:+.0f} MB")


if __name__ == "__main__":
    main()
