"""Does the laptop configuration train in the time of the paper's own configuration?

    python benchmarks/laptop.py [--quick] [--data PATH] [--rounds 2] [--space laptop]

Two whole commands, alternating, timed from start to exit on this machine:
`python -m allsearch.study --space paper-best --trials 1` (the paper's Table 1 best: 15 epochs,
batch 64, its 3-block network) and `python -m allsearch.study --space laptop --trials 1`
(allsearch/spaces/laptop.yaml). Each prints its trial's validation and test accuracy (one seed,
the split of seed 42: a check that the run learned, not the confirmed figure, which is
`python -m allsearch.confirm`'s). Both track into one SQLite MLflow store in a temporary folder;
the pixel cache is filled once before the first round, as for a user's second study.

Data: --data, else the real dataset at ../shared/data/leukemia/Original when present, else
(with --quick) synthetic images. --quick: both spaces cut to 1 epoch, one round. Key figure,
last line: the wall time ratio laptop / paper-best (median over rounds; the goal is <= 1).
"""

from __future__ import annotations

import argparse
import datetime
import re
from pathlib import Path

import yaml
from _common import (
    REPO,
    fail,
    isolated_workdir,
    machine,
    median,
    real_or_synthetic,
    timed_output,
    timed_run,
)

SPACES = REPO / "allsearch" / "spaces"
BEST = re.compile(r"best trial #\d+:\s+val_accuracy ([\d.]+)\s+test_accuracy ([\d.]+)")


def _space(name: str, workdir: Path, quick: bool) -> str:
    """The shipped space itself, or (--quick) a copy of it cut to one epoch."""
    path = SPACES / f"{name}.yaml"
    if not quick:
        return str(path)
    space = yaml.safe_load(path.read_text())
    space["fixed"]["epochs"] = 1
    space["fixed"].pop("patience", None)
    copy = workdir / f"{name}-1-epoch.yaml"
    copy.write_text(yaml.safe_dump(space))
    return str(copy)


def _run(args: list[str], cwd: Path) -> tuple[float, str]:
    """(wall seconds, 'val V test T') of `python args...`, a study of one trial."""
    wall, out = timed_output(args, cwd=cwd)
    found = BEST.search(out)
    if found is None:
        fail(args, out)
    return wall, f"val {found[1]} test {found[2]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="both spaces cut to 1 epoch, 1 round")
    parser.add_argument("--data", default=None, help="dataset folder or bundle (see above)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--space", default="laptop", help="the space timed against paper-best")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    workdir = isolated_workdir("laptop")
    data = real_or_synthetic(args.data, args.quick, workdir)
    spaces = {"paper-best": _space("paper-best", workdir, args.quick),
              args.space: _space(args.space, workdir, args.quick)}
    timed_run(["-m", "allsearch.data", data], cwd=workdir)  # warm the pixel cache

    walls: dict[str, list[float]] = {name: [] for name in spaces}
    for i in range(rounds):
        # Alternating which goes first: a machine that speeds up or slows down favours neither.
        order = list(spaces) if i % 2 == 0 else list(spaces)[::-1]
        for name in order:
            wall, accuracy = _run(["-m", "allsearch.study", "--space", spaces[name], "--trials", "1",
                                   "--data", data, "--study-name", f"{name}-{i}",
                                   "--storage", f"sqlite:///{workdir}/optuna.db",
                                   "--tracking-uri", f"sqlite:///{workdir}/mlflow.db",
                                   "--no-progress"], workdir)
            walls[name].append(wall)
            print(f"round {i + 1}: {name:>10} {wall:6.1f} s  ({accuracy}, one seed)", flush=True)
    print(f"machine: {machine()}; {datetime.datetime.now().isoformat(timespec='minutes')}")
    print(f"data: {data}; stores in {workdir}")
    ratio = median(walls[args.space]) / median(walls["paper-best"])
    print(f"wall time ratio {args.space} / paper-best (median of {rounds}): {ratio:.3f}")


if __name__ == "__main__":
    main()
