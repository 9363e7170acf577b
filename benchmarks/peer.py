"""Is allsearch ahead of the search a researcher would write by hand?

    python benchmarks/peer.py [--quick] [--data PATH] [--trials 4] [--epochs 4] [--rounds 2]
                              [--precision float32|bfloat16|auto]

The same N trials of the same work (the paper's network, batch 64, only the loss searched
over its two values, TPE with seed 0, every trial trained: no pruning, no reuse of an
identical earlier trial) run, alternating, as whole processes timed from start to exit:
- allsearch: `python -m allsearch.study --trials N` with a space file written here, tracking
  into a SQLite MLflow store (curves, figures, tables, the champion model and registry,
  leaderboard, Optuna's SQLite storage);
- the peer, benchmarks/peer_script.py: an Optuna objective with an MLflow nested run per
  trial and `mlflow.keras.autolog()`, test accuracy and prediction time logged by hand, the
  paper's pipeline (100x100 grayscale, a stratified 70/15/15 split), into its own SQLite
  MLflow store.
Both stores persist over the rounds, as they would for a user; allsearch's pixel cache is
filled once before the first round, as for a user's second study.

Data: --data, else the real dataset at ../shared/data/leukemia/Original when present, else
(with --quick) synthetic images. --quick: 2 trials of 1 epoch, one round. Key figure, last
line: the wall time ratio allsearch / peer (median over rounds; the goal is <= 0.9).
"""

from __future__ import annotations

import argparse
import datetime
import resource
from pathlib import Path

from _common import REPO, isolated_workdir, machine, median, real_or_synthetic, timed_run

SPACE = """name: peer
description: The paper's network for {epochs} epochs, batch 64; only the loss is searched.
objective: val_accuracy
params:
  loss: {{type: categorical, choices: [categorical_crossentropy, binary_crossentropy]}}
fixed: {{epochs: {epochs}, batch_size: 64, conv_layers: 3, learning_rate: 0.001, dropout: 0.5,
        dense_units: 128, features: pixels}}
"""


def _timed(args: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process and all it started) of `python args...`."""
    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    before = cpu()
    wall = timed_run(args, cwd=cwd)
    return wall, cpu() - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 trials of 1 epoch, 1 round")
    parser.add_argument("--data", default=None, help="dataset folder (see above)")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precision", default="float32", choices=("float32", "bfloat16", "auto"),
                        help="for both (the peer's Keras policy, allsearch's --precision); "
                             "auto: each at its default (allsearch: bfloat16 on a CPU with "
                             "native bf16; the peer: float32)")
    args = parser.parse_args()
    trials, epochs, rounds = (2, 1, 1) if args.quick else (args.trials, args.epochs, args.rounds)
    workdir = isolated_workdir("peer")  # every store and cache of both lives here
    data = real_or_synthetic(args.data, args.quick, workdir)
    space = workdir / "peer.yaml"
    space.write_text(SPACE.format(epochs=epochs))
    timed_run(["-m", "allsearch.data", data], cwd=workdir)  # warm the pixel cache

    peer_s: list[tuple[float, float]] = []
    allsearch_s: list[tuple[float, float]] = []
    for i in range(rounds):
        allsearch = ["-m", "allsearch.study", "--space", str(space), "--trials", str(trials),
                     "--data", data, "--study-name", f"peer-{i}", "--pruner", "none",
                     "--retrain-duplicates", "--seed", "0", "--precision", args.precision,
                     "--storage", f"sqlite:///{workdir}/optuna.db",
                     "--tracking-uri", f"sqlite:///{workdir}/mlflow.db", "--no-progress"]
        peer = [str(REPO / "benchmarks" / "peer_script.py"), data, "--trials", str(trials),
                "--epochs", str(epochs), "--precision",
                "float32" if args.precision == "auto" else args.precision, "--experiment",
                f"peer-{i}", "--tracking-uri", f"sqlite:///{workdir}/peer-mlflow.db"]
        # Alternating which goes first: a machine that speeds up or slows down over the run
        # favours neither.
        for command, times in [(allsearch, allsearch_s), (peer, peer_s)][::1 if i % 2 == 0 else -1]:
            times.append(_timed(command, workdir))
        (a_wall, a_cpu), (p_wall, p_cpu) = allsearch_s[-1], peer_s[-1]
        print(f"round {i + 1}: allsearch {a_wall:.1f} s ({a_cpu:.1f} CPU s), peer {p_wall:.1f} s "
              f"({p_cpu:.1f} CPU s): ratio {a_wall / p_wall:.3f} (CPU {a_cpu / p_cpu:.3f})",
              flush=True)
    print(f"machine: {machine()}; {datetime.datetime.now().isoformat(timespec='minutes')}")
    print(f"data: {data}; {trials} trials of the paper's network, {epochs} epochs, batch 64, "
          f"{args.precision}; stores in {workdir}")
    cpu_ratio = median([a for _, a in allsearch_s]) / median([p for _, p in peer_s])
    print(f"CPU time ratio allsearch / peer (median of {rounds}): {cpu_ratio:.3f}")
    ratio = median([a for a, _ in allsearch_s]) / median([p for p, _ in peer_s])
    print(f"wall time ratio allsearch / peer (median of {rounds}): {ratio:.3f}")


if __name__ == "__main__":
    main()
