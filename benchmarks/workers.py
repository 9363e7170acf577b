"""Trials per hour with one worker and with two on this machine.

    python benchmarks/workers.py [--quick] [--data PATH] [--epochs 3]
                                 [--storage postgresql://...] [--tracking-uri http://...]

Runs the same 8 configurations (a grid: conv layers 1-4 x the two losses, batch 64) as one
study with --workers 1 and again with --workers 2 (each worker takes cores / workers threads),
each worker process running 4 trials. The grid makes both runs train exactly the same models.
--quick: synthetic images, 4 one-epoch configurations, 4 trials per process. Key figure, last
line: trials per hour of each and their ratio. By default the study lives in a temporary
SQLite file; --storage/--tracking-uri run it against PostgreSQL and an MLflow server instead.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from _common import isolated_workdir, machine, synthetic_data  # noqa: E402

SPACE = """name: workers
objective: val_accuracy
params:
  conv_layers: {{type: categorical, choices: {depths}}}
  loss: {{type: categorical, choices: [categorical_crossentropy, binary_crossentropy]}}
fixed: {{epochs: {epochs}, batch_size: 64}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="synthetic data, 4 short trials")
    parser.add_argument("--data", default=None, help="dataset folder (default: synthetic)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--precision", default="auto", choices=("auto", "float32", "bfloat16"))
    parser.add_argument("--storage", default=None, help="Optuna storage (default: temporary SQLite)")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: temporary SQLite)")
    args = parser.parse_args()
    import uuid

    from allsearch import study
    from allsearch.core import cli

    cli.quiet_libraries()
    workdir = isolated_workdir("workers")
    depths, epochs, per_process = ([1, 2], 1, 4) if args.quick else ([1, 2, 3, 4], args.epochs, 4)
    trials = 2 * len(depths)
    space = workdir / "workers.yaml"
    space.write_text(SPACE.format(depths=depths, epochs=epochs))
    data = args.data or str(synthetic_data(workdir / "synthetic", per_class=60))
    rates = {}
    for workers in (1, 2):
        started = time.perf_counter()
        done = study.run(trials=trials, space=str(space), data=data,
                         study_name=f"workers-{workers}-{uuid.uuid4().hex[:6]}",
                         storage=args.storage or f"sqlite:///{workdir}/optuna.db",
                         tracking_uri=args.tracking_uri or f"sqlite:///{workdir}/mlflow.db",
                         sampler="grid",
                         pruner="none", log_models="none", precision=args.precision,
                         workers=workers, trials_per_process=per_process, progress=False)
        elapsed = time.perf_counter() - started
        complete = sum(t.state.name == "COMPLETE" for t in done.trials)
        if complete != trials:
            raise SystemExit(f"{workers} worker(s): {complete} of {trials} trials complete")
        rates[workers] = trials / elapsed * 3600
        print(f"{workers} worker(s): {trials} trials in {elapsed:.0f} s = {rates[workers]:.0f} "
              f"trials/hour")
    print(f"machine: {machine()}")
    from allsearch.core.errors import redact

    stores = f"{redact(args.storage)} + {args.tracking_uri}" if args.storage else "SQLite"
    print(f"data: {data}; {trials} configurations, {epochs} epoch(s) each, "
          f"{per_process} trials per worker process; stores: {stores}")
    print(f"trials per hour: 1 worker {rates[1]:.0f}, 2 workers {rates[2]:.0f} "
          f"(ratio {rates[2] / rates[1]:.2f})")


if __name__ == "__main__":
    main()
