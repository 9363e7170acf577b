"""Local worker processes: keep `--workers` processes busy until a study needs no more trials.

A worker runs trials until its memory has grown by --worker-memory-mb (TensorFlow keeps some
memory after every model.fit that clear_session does not return; see benchmarks/memory.py) or
it ran --trials-per-process of them; then a fresh one takes its place. The pool knows nothing
of the engine: it starts `target(config, index,
n_trials, done)` in spawned processes, where `done` is a shared counter the target increments
after each trial, and asks `remaining()` how many trials the study still needs.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.resource_tracker
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from allsearch.core.config import StudyConfig
from allsearch.core.errors import StoreError
from allsearch.core.hardware import held_interrupts, on_interrupt, own_process

__all__ = ["run_workers", "INTERRUPTED"]

INTERRUPTED = 130  # a worker's exit code after Ctrl-C
_POLL_S = 0.5
_HELD = {signal.SIGINT, signal.SIGTERM}  # held in a worker until it can end a trial


def run_workers(target: Callable[..., None], config: StudyConfig, *,
                remaining: Callable[[], int], timeout: float | None = None,
                on_tick: Callable[[], None] | None = None) -> None:
    """Start workers until `remaining()` trials are covered; return when all have ended.

    Ctrl-C reaches the workers too (same process group): they end their trial, and this
    raises KeyboardInterrupt once they have. Three crashed workers in a row end the study.
    """
    context = multiprocessing.get_context("spawn")
    started = time.monotonic()
    running: list[tuple[Any, int, Any]] = []  # (process, trials assigned, trials done counter)
    crashes: list[int] = []
    index = 0
    try:
        while True:
            for entry in [e for e in running if not e[0].is_alive()]:
                running.remove(entry)
                code = entry[0].exitcode
                if code == INTERRUPTED:
                    raise KeyboardInterrupt
                crashes = crashes + [code] if code != 0 else []
                if len(crashes) >= 3:
                    raise StoreError(f"worker processes keep ending with an error (exit codes "
                                     f"{crashes}); run with --workers 1 --debug to see it")
            # A worker runs at most its assigned trials, and stops early when the study is
            # full or its memory has grown; each running one has at least one trial in hand.
            in_flight = sum(max(1, assigned - done.value) for _, assigned, done in running)
            need = remaining() - in_flight
            timed_out = timeout is not None and time.monotonic() - started > timeout
            while need > 0 and len(running) < config.workers and not timed_out:
                n = min(config.trials_per_process or need, need)
                done = context.Value("i", 0)
                process = context.Process(target=_entry, args=(target, config, index, n, done))
                with held_interrupts():  # a Ctrl-C now is raised once the worker is listed
                    _start_with_signals_held(process)
                    running.append((process, n, done))
                index += 1
                need -= n
            if not running:
                break
            time.sleep(_POLL_S)
            if on_tick is not None:
                on_tick()
    except KeyboardInterrupt:
        # A terminal's Ctrl-C reached the workers too; `kill`, `docker stop` or systemd
        # reached only this process. Either way each worker ends its trial as KILLED.
        for process, _, _ in running:
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)
        for process, _, _ in running:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
                process.join()
        raise


def _start_with_signals_held(process: Any) -> None:
    """Start a worker whose SIGINT and SIGTERM wait until _entry runs: a process still
    importing has no trial to end, and Python would print the import's traceback. The worker
    inherits this thread's signal mask across fork and exec; _entry unblocks it, and a signal
    that came meanwhile is delivered then. (Ignoring SIGINT here instead, which the worker
    would inherit too, lost a Ctrl-C that reached this process while a worker started.)"""
    multiprocessing.resource_tracker.ensure_running()  # starting it unblocks both signals
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
    try:
        process.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _entry(target: Callable[..., None], config: StudyConfig, index: int, n_trials: int,
           done: Any) -> None:
    """A worker process: Ctrl-C and SIGTERM end its trial (recorded as KILLED), then it exits
    with INTERRUPTED, quietly."""
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    own_process()  # a worker's process is the study's
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD)  # a signal held since the start
        target(config, index, n_trials, done)
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)


def _interrupt(signum: int, frame: object) -> None:
    # Once: a second signal must not interrupt the recording of the first. A handler that does
    # nothing, not SIG_IGN: a second signal already pending (a Ctrl-C and the pool's SIGTERM
    # held while the worker started) would find SIG_IGN and be reported by Python as
    # "Signal 15 ignored due to race condition", with a traceback.
    signal.signal(signal.SIGTERM, _ignore)
    signal.signal(signal.SIGINT, _ignore)
    on_interrupt(signum, frame)


def _ignore(signum: int, frame: object) -> None:
    """A worker's handler once it is ending its trial."""
