"""The background writer that finishes trial runs while the next trial trains: order, errors,
and nothing lost when a process exits without waiting for it."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from allsearch.tracking.writer import Writer


def test_jobs_run_in_order_and_drain_waits_for_them() -> None:
    writer, done = Writer(), []
    release = threading.Event()
    writer.submit(lambda: (release.wait(5), done.append(1)))
    writer.submit(lambda: done.append(2))
    assert done == []  # the caller went on
    release.set()
    writer.drain()
    assert done == [1, 2]


def test_a_failed_job_is_raised_once_and_the_next_jobs_still_run() -> None:
    writer, done = Writer(), []

    def broken() -> None:
        raise OSError(28, "No space left on device")

    writer.submit(broken)
    writer.submit(lambda: done.append("b"))
    with pytest.raises(OSError, match="No space left"):
        writer.drain()
    assert done == ["b"]
    writer.check()  # raised once: a later check has nothing to say
    writer.submit(lambda: done.append("c"))
    writer.drain()
    assert done == ["b", "c"]


def test_a_process_that_exits_without_draining_still_finishes_its_jobs(tmp_path: Path) -> None:
    target = tmp_path / "written.txt"
    program = (f"import time\nfrom pathlib import Path\nfrom allsearch.tracking.writer import Writer\n"
               f"w = Writer()\n"
               f"w.submit(lambda: (time.sleep(1.0), Path({str(target)!r}).write_text('ok')))\n")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert target.read_text() == "ok" and time.perf_counter() - started >= 1.0
