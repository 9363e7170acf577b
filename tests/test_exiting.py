"""A command ends without Python's module teardown once its work is done
(allsearch/exiting.py): every exit handler still runs, its output and status arrive whole.
Real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROGRAM = """
import atexit, sys
from allsearch import exiting

class Teardown:
    def __del__(self):
        print("torn down")

kept = Teardown()  # a module global: only module teardown finalizes it
atexit.register(lambda: print("handler ran"))
print("x" * 100000)  # more than a pipe's buffer holds at once
{end}
"""


@pytest.mark.parametrize("end, status, torn_down", [
    ("sys.exit(exiting.finish(3))", 3, False),
    ("sys.exit(exiting.finish(0))", 0, False),
    ("sys.exit(3)", 3, True),  # never said it has finished: the usual teardown
])
def test_a_finished_process_skips_teardown_but_not_its_handlers_or_output(
        end: str, status: int, torn_down: bool) -> None:
    done = subprocess.run([sys.executable, "-c", PROGRAM.format(end=end)],
                          capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k != "ALLSEARCH_FULL_TEARDOWN"})
    assert done.returncode == status, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "x" * 100000 and "handler ran" in lines
    assert ("torn down" in lines) is torn_down


def test_a_command_piped_elsewhere_delivers_every_line_and_its_status(tiny_data: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "allsearch.data", str(tiny_data)],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "split" in ok.stdout and ok.stdout.endswith("\n")
    bad = subprocess.run([sys.executable, "-m", "allsearch.data", str(tiny_data / "missing")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr


def test_full_teardown_when_asked() -> None:
    done = subprocess.run([sys.executable, "-c", PROGRAM.format(end="sys.exit(exiting.finish(3))")],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "ALLSEARCH_FULL_TEARDOWN": "1"})
    assert done.returncode == 3 and "torn down" in done.stdout.splitlines()
