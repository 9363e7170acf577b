"""How long after the command does a study show its first progress line?

    python benchmarks/startup.py [--quick] [--data PATH] [--rounds 3]

Starts `python -m allsearch.study --trials 50` (the newcomer's first command, with its progress
line on) as a whole process, reads its stderr as it comes, and notes the seconds until the
progress line (`study NAME: ...`) first appears; then stops the study with SIGTERM (which it
takes as Ctrl-C) and waits for it to end. The machine is "warm": one round runs first and is
not counted (the operating system's file cache holds the libraries, the pixel cache the
images). --quick: synthetic images, one counted round. Key figure, last line: seconds to the
first progress line (median of the counted rounds).
"""

from __future__ import annotations

import argparse
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

from _common import isolated_workdir, machine, median, quiet_env, synthetic_data, timed_run


def first_line_s(workdir: Path, data: str, name: str, limit_s: float = 300) -> float:
    """Seconds from the command to its first progress line."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "allsearch.study", "--trials", "50", "--data", data,
         "--study-name", name, "--storage", f"sqlite:///{workdir}/optuna.db",
         "--tracking-uri", f"sqlite:///{workdir}/mlflow.db"],
        cwd=workdir, env=quiet_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.set_blocking(process.stderr.fileno(), False)
    selector = selectors.DefaultSelector()
    selector.register(process.stderr, selectors.EVENT_READ)
    seen, buffer = None, b""
    while seen is None and time.perf_counter() - started < limit_s:
        for _ in selector.select(timeout=0.05):
            chunk = process.stderr.read() or b""
            buffer += chunk
            if f"study {name}".encode() in buffer:  # tqdm writes "study NAME: ..." at once
                seen = time.perf_counter() - started
            elif not chunk and process.poll() is not None:
                sys.exit(f"the study ended before its progress line:\n{buffer.decode()[-3000:]}")
    # SIGTERM ends a study as Ctrl-C does, and is never ignored by a shell's background job.
    process.send_signal(signal.SIGTERM)
    try:
        process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
    if seen is None:
        sys.exit(f"no progress line within {limit_s:.0f} s:\n{buffer.decode()[-3000:]}")
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="synthetic data, one round")
    parser.add_argument("--data", default=None, help="dataset folder (default: synthetic)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    workdir = isolated_workdir("startup")
    data = str(Path(args.data).resolve()) if args.data else str(
        synthetic_data(workdir / "synthetic", per_class=40))
    timed_run(["-m", "allsearch.data", data], cwd=workdir)  # the pixel cache, as after a first run
    rounds = 1 if args.quick else args.rounds
    print(f"machine: {machine()}")
    print(f"data: {data}")
    first_line_s(workdir, data, "warm-up")
    times = []
    for i in range(rounds):
        times.append(first_line_s(workdir, data, f"startup-{i}"))
        print(f"round {i + 1}: first progress line after {times[-1]:.1f} s")
    print(f"seconds to the first progress line (median of {rounds}): {median(times):.1f}")


if __name__ == "__main__":
    main()
