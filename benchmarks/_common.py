"""What the benchmark scripts share: synthetic data, the machine's description, timed
subprocesses. Each benchmark prints its key figure as its last line."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NoReturn

REPO = Path(__file__).resolve().parents[1]
PAPER_TEST_PREDICTION_S = 1.98   # the paper's Table 1, best row (one run)
PAPER_VAL_ACCURACY = 0.80


def quiet_env() -> dict[str, str]:
    """The environment for child processes: TensorFlow's start-up chatter off."""
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}


def isolated_workdir(name: str, folder: str | None = None) -> Path:
    """A folder for one benchmark's stores (a new temporary one unless given); this process's
    caches, MLflow artifacts and KerasTuner files are pointed into it, so a benchmark never
    writes into the repository's mlruns/."""
    workdir = Path(folder or tempfile.mkdtemp(prefix=f"allsearch-{name}-"))
    os.environ.update(ALLSEARCH_CACHE_DIR=str(workdir / "cache"),
                      ALLSEARCH_ARTIFACT_ROOT=str(workdir / "artifacts"),
                      ALLSEARCH_KERAS_TUNER_DIR=str(workdir / "keras-tuner"))
    return workdir


def synthetic_data(root: Path, per_class: int) -> Path:
    """A class-folder dataset of synthetic images (the real data is never shipped)."""
    from allsearch.data.synthetic import write_dataset

    if not root.is_dir():
        write_dataset(root, per_class=per_class, duplicate=False, junk=False)
    return root


# The real dataset beside the checkout (../shared/data/...), or beside its worktree folder.
REAL_DATA = [root / "shared" / "data" / "leukemia" / "Original" for root in REPO.parents[:2]]


def real_or_synthetic(data: str | None, quick: bool, workdir: Path) -> str:
    """--data, else the real dataset at ../shared/data/leukemia/Original when present, else
    (quick modes only) synthetic images in `workdir`."""
    if data:
        return str(Path(data).resolve())
    for candidate in REAL_DATA:
        if candidate.is_dir():
            return str(candidate)
    if not quick:
        raise SystemExit("no dataset: pass --data FOLDER (or --quick for synthetic images)")
    return str(synthetic_data(workdir / "synthetic", per_class=60))


def machine() -> str:
    """One line naming this machine: CPU model, cores, bf16 support, Python."""
    model = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    bf16 = sorted(flags & {"avx512_bf16", "amx_bf16"})
    return (f"{model}, {os.cpu_count()} cores, bf16: {' '.join(bf16) or 'none'}; "
            f"Python {platform.python_version()}")


def timed_output(args: list[str], *, cwd: Path | None = None) -> tuple[float, str]:
    """Run `python args...` to the end; (its wall time in seconds, its output) (fails loudly)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=quiet_env(),
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        fail(args, done.stdout, done.stderr)
    return elapsed, done.stdout


def timed_run(args: list[str], *, cwd: Path | None = None) -> float:
    """Run `python args...` to the end; its wall time in seconds (fails loudly)."""
    return timed_output(args, cwd=cwd)[0]


def fail(args: list[str], stdout: str, stderr: str = "") -> NoReturn:
    """End the benchmark: which step failed and the end of what it printed."""
    sys.exit(f"benchmark step failed: python {' '.join(args)}\n{stdout[-2000:]}\n{stderr[-3000:]}")


def median(values: list[float]) -> float:
    return statistics.median(values)
