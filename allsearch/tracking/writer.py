"""A background writer: the files of a finished trial's run (learning curves, confusion
matrix, per-class report, test predictions) are drawn and written in one thread of its own
while the next trial trains.

Nothing is lost on the way out: `drain` waits for every job (the engine calls it when it stops
trying trials, Ctrl-C and SIGTERM included), and a process that exits without draining still
finishes them first (atexit). A job that fails is raised again in the trial's thread at the
next `check` or `drain`, never dropped; the jobs after it still run. Jobs run one at a time,
in order."""

from __future__ import annotations

import atexit
import queue
import threading
from collections.abc import Callable

__all__ = ["Writer"]


class Writer:
    """Runs jobs (callables) in order in one background thread."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[Callable[[], None]] = queue.Queue()
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def submit(self, job: Callable[[], None]) -> None:
        """Queue `job`."""
        with self._lock:
            if self._thread is None:
                # A daemon thread, drained at exit: a blocked store must not hang the exit
                # after the interpreter's own shutdown has begun.
                self._thread = threading.Thread(target=self._work, name="allsearch-writer",
                                                daemon=True)
                self._thread.start()
                atexit.register(self._drain_at_exit)
        self._jobs.put(job)

    def drain(self) -> None:
        """Wait until every queued job is done; raise the first one that failed."""
        self._jobs.join()
        self.check()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job()
            except BaseException as exc:  # noqa: BLE001 - handed to the trial's thread
                if self._error is None:
                    self._error = exc
            finally:
                self._jobs.task_done()

    def check(self) -> None:
        """Raise the first job that failed since the last check, if one did."""
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _drain_at_exit(self) -> None:
        self._jobs.join()
