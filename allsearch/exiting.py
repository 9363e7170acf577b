"""How a command's process ends: every exit handler runs, then no module teardown.

Python's own finalization of a process that ran a study (tearing down the thousands of modules
TensorFlow and MLflow load) takes 0.3-0.45 s after all the work is saved
(benchmarks/exit.py): at the end of every command, and between a retired worker and its
replacement. A command (or worker) that has ended records its exit status with
`finish`; at exit, after the threads were joined and every other exit handler ran (the
background writer drained, worker processes joined, MLflow's and logging's flushes), the
process ends with that status at once. A process that never called `finish` (a library user,
pytest, an uncaught error) ends the usual way, and so does one measured by coverage.py or
run with ALLSEARCH_FULL_TEARDOWN=1 (for tools that need the teardown).

The handler is registered when `allsearch` is imported, before TensorFlow, MLflow or any
other library: exit handlers run last-registered first, so it runs after all of theirs.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys

__all__ = ["finish"]

_status: int | None = None


def finish(status: int | None) -> int:
    """Record that this process has ended its work with `status` (what sys.exit is given);
    returns the status as an int, for sys.exit."""
    global _status
    _status = 0 if status is None else int(status)
    return _status


def _end_without_teardown() -> None:
    if _status is None or "coverage" in sys.modules or os.environ.get("ALLSEARCH_FULL_TEARDOWN"):
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing left to deliver
            pass
    os._exit(_status)


atexit.register(_end_without_teardown)
