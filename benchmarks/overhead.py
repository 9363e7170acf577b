"""What does allsearch cost beyond the training it runs?

    python benchmarks/overhead.py [--quick] [--data PATH] [--rounds 2] [--epochs 15]
                                  [--precision float32|bfloat16]

Alternates, in one run, a plain Keras script of the paper's best configuration
(benchmarks/plain_keras.py: reads the images, trains, predicts val and test) with the same
configuration as a one-trial study through allsearch (`python -m allsearch.study --trials 1`
with a space that samples nothing: tracking, curves, plots, model logging, champion
registration, leaderboard and all). Both are whole processes timed from start to exit, imports
included. allsearch's pixel cache is warmed once first, as it is for a user's second study.
--quick: synthetic images, 2 epochs, one round. Key figure, last line: the time ratio
allsearch / plain (median over rounds).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import REPO, isolated_workdir, machine, median, synthetic_data, timed_run

SPACE = """name: overhead
objective: val_accuracy
params: {{}}
fixed: {{epochs: {epochs}, batch_size: 64, loss: categorical_crossentropy, conv_layers: 3}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="synthetic data, 2 epochs, 1 round")
    parser.add_argument("--data", default=None, help="dataset folder (default: synthetic)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--precision", default="float32", choices=("float32", "bfloat16"))
    args = parser.parse_args()
    rounds, epochs = (1, 2) if args.quick else (args.rounds, args.epochs)
    # Every store of the allsearch runs lives in the temporary folder.
    workdir = isolated_workdir("overhead")
    # Absolute: the timed commands run in the temporary folder.
    data = str(Path(args.data).resolve()) if args.data else str(
        synthetic_data(workdir / "synthetic", per_class=60))
    space = workdir / "overhead.yaml"
    space.write_text(SPACE.format(epochs=epochs))
    timed_run(["-m", "allsearch.data", data], cwd=workdir)  # warm the pixel cache

    plain_s: list[float] = []
    allsearch_s: list[float] = []
    for i in range(rounds):
        plain_s.append(timed_run([str(REPO / "benchmarks" / "plain_keras.py"), data,
                                  "--epochs", str(epochs), "--precision", args.precision],
                                 cwd=workdir))
        allsearch_s.append(timed_run(
            ["-m", "allsearch.study", "--space", str(space), "--trials", "1", "--data", data,
             "--study-name", f"overhead-{i}", "--storage", f"sqlite:///{workdir}/optuna.db",
             "--tracking-uri", f"sqlite:///{workdir}/mlflow.db", "--precision", args.precision,
             "--no-progress"], cwd=workdir))
        print(f"round {i + 1}: plain Keras {plain_s[-1]:.1f} s, allsearch {allsearch_s[-1]:.1f} s")
    print(f"machine: {machine()}")
    print(f"data: {data}; paper's best configuration, {epochs} epochs, {args.precision}")
    ratio = median(allsearch_s) / median(plain_s)
    print(f"overhead ratio allsearch / plain Keras (median of {rounds}): {ratio:.3f}")


if __name__ == "__main__":
    main()
