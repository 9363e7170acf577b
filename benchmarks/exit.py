"""How long does a finished study's process take to end?

    python benchmarks/exit.py [--quick] [--rounds 3]

Runs a one-trial study (`python -m allsearch.study --trials 1`, synthetic images, 1 epoch) as a
whole process, notes when each line of its output arrives, and reports the seconds from its
last line (the summary, printed once every run is saved) to the process's end; alternating,
in one run, the default end (exit handlers, then no module teardown: allsearch/exiting.py)
with ALLSEARCH_FULL_TEARDOWN=1 (Python's own finalization). --quick: one round. Key figure,
last line: seconds from the last line to the end, both ways (medians).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from _common import isolated_workdir, machine, median, quiet_env, synthetic_data

SPACE = """name: exit
params: {}
fixed: {epochs: 1, batch_size: 32, loss: categorical_crossentropy, conv_layers: 2}
"""


def last_line_to_end_s(workdir: Path, data: Path, name: str, env: dict[str, str]) -> float:
    process = subprocess.Popen(
        [sys.executable, "-m", "allsearch.study", "--space", str(workdir / "exit.yaml"),
         "--trials", "1", "--data", str(data), "--study-name", name, "--no-progress",
         "--storage", f"sqlite:///{workdir}/optuna.db",
         "--tracking-uri", f"sqlite:///{workdir}/mlflow.db"],
        cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    last = time.perf_counter()
    for _ in iter(process.stdout.readline, b""):
        last = time.perf_counter()
    if process.wait() != 0:
        sys.exit(f"the study {name} failed (exit status {process.returncode})")
    return time.perf_counter() - last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    workdir = isolated_workdir("exit")
    data = synthetic_data(workdir / "synthetic", per_class=30)
    (workdir / "exit.yaml").write_text(SPACE)
    ways = {"default": quiet_env(), "full teardown": {**quiet_env(), "ALLSEARCH_FULL_TEARDOWN": "1"}}
    seconds: dict[str, list[float]] = {way: [] for way in ways}
    for i in range(rounds):
        for way, env in ways.items():
            seconds[way].append(last_line_to_end_s(workdir, data, f"exit-{i}-{way[0]}", env))
        print(f"round {i + 1}: " + ", ".join(f"{w} {s[-1]:.2f} s" for w, s in seconds.items()))
    print(f"machine: {machine()}")
    print(f"seconds from a study's last line to its end (median of {rounds}): default "
          f"{median(seconds['default']):.2f}, full teardown {median(seconds['full teardown']):.2f}")


if __name__ == "__main__":
    main()
