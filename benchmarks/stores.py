"""How long does a study wait for a new MLflow store?

    python benchmarks/stores.py [--quick] [--rounds 5]

Opens a new SQLite MLflow store (allsearch's Tracker: the lock, the tables, the study's
experiment) in a fresh process, three ways, alternating, each timed inside the process after
its imports: copied from the migrated template (allsearch.sqlite_store, the default; the
template made beforehand, as after a machine's first study), by MLflow's own migrations (the
template's folder unusable), and an existing store opened again. --quick: one round. Key
figure, last line: seconds to open a new store, template and MLflow's migrations (medians).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from _common import isolated_workdir, machine, median, quiet_env

OPEN = """
import sys, time
from allsearch.tracking import Tracker
import mlflow.store.tracking.sqlalchemy_store  # an import, not the opening: timed apart
started = time.perf_counter()
Tracker("study", tracking_uri=f"sqlite:///{sys.argv[1]}")
print(time.perf_counter() - started)
"""


def open_s(database: Path, schema_dir: Path) -> float:
    done = subprocess.run([sys.executable, "-c", OPEN, str(database)], capture_output=True,
                          text=True, env={**quiet_env(), "ALLSEARCH_SCHEMA_CACHE_DIR": str(schema_dir)})
    if done.returncode != 0:
        sys.exit(f"opening {database} failed:\n{done.stderr[-3000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    workdir = isolated_workdir("stores")
    template_dir = workdir / "schema"
    blocked = workdir / "not-a-folder"
    blocked.write_text("")
    open_s(workdir / "warm.db", template_dir)  # makes the template (a machine's first study)

    times: dict[str, list[float]] = {"template": [], "migrations": [], "existing": []}
    for i in range(rounds):
        times["template"].append(open_s(workdir / f"t{i}.db", template_dir))
        times["migrations"].append(open_s(workdir / f"m{i}.db", blocked / "schema"))
        times["existing"].append(open_s(workdir / f"t{i}.db", template_dir))
        print(f"round {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()))
    print(f"machine: {machine()}")
    t, m, e = (median(times[k]) for k in ("template", "migrations", "existing"))
    print(f"an existing store opens in {e:.2f} s")
    print(f"seconds to open a new MLflow store (median of {rounds}): template {t:.2f}, "
          f"MLflow's migrations {m:.2f}")


if __name__ == "__main__":
    main()
