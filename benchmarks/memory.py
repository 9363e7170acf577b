"""Does memory grow from trial to trial? Peak RSS after each trial of one study.

    python benchmarks/memory.py [--quick] [--data PATH] [--trials 20]

Runs a study of 1-epoch trials of the paper's network (search/smoke.yaml) in this process and
records the process's peak resident memory (ru_maxrss) and current RSS after every trial. With
Keras' session cleared and garbage collected between trials, peak RSS after the last trial
should equal peak RSS after the first few. --quick uses a small synthetic dataset (CI); the
key figure, printed last, is the growth of peak RSS from trial 1 to the last trial.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="synthetic data, 8 trials")
    parser.add_argument("--data", default=None, help="dataset folder (default: synthetic)")
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    from allsearch import _cli, study

    _cli.quiet_libraries()
    workdir = Path(tempfile.mkdtemp(prefix="allsearch-memory-"))
    data = args.data
    if data is None:
        from conftest import write_dataset

        data = str(write_dataset(workdir / "synthetic", per_class=30, duplicate=False, junk=False))
    trials = 8 if args.quick else args.trials
    rows: list[tuple[int, float, float, float]] = []
    started = time.perf_counter()

    def record(s, trial) -> None:
        rows.append((trial.number + 1, peak_mb(), rss_mb(), time.perf_counter() - started))
        print(f"trial {trial.number + 1:3d}: peak RSS {rows[-1][1]:8.1f} MB   "
              f"RSS {rows[-1][2]:8.1f} MB   {rows[-1][3]:6.0f} s", flush=True)

    study.run(trials=trials, space="smoke", data=data, study_name=f"memory-{int(time.time())}",
              storage=f"sqlite:///{workdir}/optuna.db",
              tracking_uri=f"sqlite:///{workdir}/mlflow.db", pruner="none", log_models="none",
              progress=False, trial_callbacks=[record])
    first, last = rows[0], rows[-1]
    print(f"data: {data}; {len(rows)} trials of 1 epoch (search/smoke.yaml)")
    print(f"peak RSS after trial 1: {first[1]:.0f} MB; after trial {last[0]}: {last[1]:.0f} MB")
    print(f"peak RSS growth trial 1 -> {last[0]}: {last[1] - first[1]:+.0f} MB")


if __name__ == "__main__":
    main()
