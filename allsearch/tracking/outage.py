"""Waiting out a tracking server that stopped answering, in sight of the user.

MLflow retries a failed HTTP request itself, silently, for about four minutes per call
(MLFLOW_HTTP_REQUEST_MAX_RETRIES, 7 by default, with backoff: 248 s measured against a port
nothing listens on), and a study that stops on it makes several more calls on its way out, each
as long and as silent. A study's Tracker calls an `http(s)://` server with two such retries (a
few seconds: a server busy for a moment is not "down"; the user's own setting wins), and
`ServerWait.call` tries a call that failed so again every two seconds while it says, on one
line (updated in place on a terminal):

    waiting for the MLflow server at URL (down for 30 s; Ctrl-C stops, completed trials are kept)

A server back within `--server-wait` seconds (StudyConfig.server_wait) continues the study where
it was (the trial that trains meanwhile loses nothing); one that is not ends the study with one
line (a StoreError). Only calls the server did not take are tried again (no connection, or a
502, 503, 504 or 429 answer); no mlflow import here.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from allsearch.core.errors import StoreError, chain, redact
from allsearch.core.hardware import interruptible

__all__ = ["ServerWait", "Waiting", "server_down", "RETRIES_VARIABLE", "CALL_ENVIRONMENT"]

T = TypeVar("T")
RETRIES_VARIABLE = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
PAUSE_S = 2.0  # between two tries of a call (each takes a few seconds: MLflow's two retries)
LOG_EVERY_S = 30  # where stderr is not a terminal: one line this often, not one per try


def server_down(exc: BaseException) -> bool:
    """Did a call fail because the server did not take it: no connection, or (after MLflow's
    own retries) a 502, 503, 504 or 429 answer? Read from the exceptions MLflow raised it
    from. A 500 is the server's own failure (say, its disk is full): said, not waited for."""
    try:
        from requests.exceptions import ConnectionError as Unreachable
        from requests.exceptions import RetryError
    except ImportError:
        return False
    return any(isinstance(e, Unreachable) or (isinstance(e, RetryError)
                                              and "too many 500 " not in str(e))
               for e in chain(exc))


# What a study's calls to a tracking server run under (each only where the user has not set it):
# two retries of MLflow's own (the rest are ServerWait's, said aloud), and no "View run ... at" /
# "View experiment at" lines on stdout at the end of every run (14 in a 4-trial study; the
# study's own lines say where its runs are).
CALL_ENVIRONMENT = {RETRIES_VARIABLE: "2", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
_lock = threading.Lock()
_callers = 0  # calls inside `_call_environment` now, across threads
_set_here: list[str] = []


@contextlib.contextmanager
def _call_environment(*, retries: bool = True) -> Iterator[None]:
    """CALL_ENVIRONMENT while a call runs (MLflow reads both per request), then as it was:
    nothing is left set in the caller's process. `retries=False`: none of MLflow's own (a
    server given up on is tried once per call while the study closes)."""
    global _callers
    with _lock:
        if _callers == 0:
            for key, value in CALL_ENVIRONMENT.items():
                if key not in os.environ:
                    os.environ[key] = value
                    _set_here.append(key)
        if not retries and RETRIES_VARIABLE in _set_here:
            os.environ[RETRIES_VARIABLE] = "0"
        _callers += 1
    try:
        yield
    finally:
        with _lock:
            _callers -= 1
            if _callers == 0:
                for key in _set_here:
                    os.environ.pop(key, None)
                _set_here.clear()


class ServerWait:
    """Calls to one tracking server, retried while it is down, for `wait_s` seconds at most
    (shared by every thread of the process: the trial's and the background writer's)."""

    def __init__(self, url: str, wait_s: float) -> None:
        self.url = redact(url)
        self.wait_s = wait_s
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._said_at: float | None = None
        self._gave_up = False

    def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`function(*args, **kwargs)`, tried again while the server is down."""
        while True:
            started = time.monotonic()
            try:
                with _call_environment(retries=not self._gave_up):
                    result = function(*args, **kwargs)
            except Exception as exc:
                if not server_down(exc):
                    raise
                self._failed(started)
                try:
                    self._pause()
                except KeyboardInterrupt:
                    self._gave_up = True  # the calls that close the study do not wait again
                    self._end_line()
                    raise
                continue
            self._answered()
            return result

    def _failed(self, started: float) -> None:
        """Say how long the server has been down (since the first call it failed began), or
        raise the StoreError that ends the study once that is `wait_s`."""
        now = time.monotonic()
        with self._lock:
            if self._down_since is None:
                self._down_since = started
            down = now - self._down_since
            if self._gave_up or down >= self.wait_s:
                if not self._gave_up:
                    self._gave_up = True
                    self._end_line()
                raise StoreError(
                    f"the MLflow server at {self.url} has not answered for {down:.0f} s "
                    f"(--server-wait {self.wait_s:g}); start it again, then run the same "
                    f"command to resume (completed trials are kept)") from None
            self._say(down)

    def _say(self, down: float) -> None:
        text = (f"waiting for the MLflow server at {self.url} (down for {down:.0f} s; Ctrl-C "
                f"stops, completed trials are kept)")
        stream = sys.stderr
        if _is_terminal(stream):
            stream.write(f"\r{text}\x1b[K")
        elif self._said_at is None or down - self._said_at >= LOG_EVERY_S:
            stream.write(text + "\n")
        else:
            return
        self._said_at = down
        stream.flush()

    def _end_line(self) -> None:
        if self._said_at is not None and _is_terminal(sys.stderr):
            sys.stderr.write("\n")
        self._said_at = None

    def _answered(self) -> None:
        if self._down_since is None:
            return
        with self._lock:
            if self._down_since is None:
                return
            down = time.monotonic() - self._down_since
            self._down_since, self._gave_up, self._said_at = None, False, None
            text = f"the MLflow server at {self.url} answers again (down for {down:.0f} s)"
            terminal = _is_terminal(sys.stderr)
            sys.stderr.write(f"\r{text}\x1b[K\n" if terminal else f"{text}\n")
            sys.stderr.flush()

    @staticmethod
    def _pause() -> None:
        if threading.current_thread() is threading.main_thread():
            with interruptible():  # Ctrl-C stops the wait, also inside a deferred write
                time.sleep(PAUSE_S)
        else:
            time.sleep(PAUSE_S)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Waiting:
    """`target` (an MlflowClient) whose method calls go through `wait.call`."""

    def __init__(self, target: Any, wait: ServerWait) -> None:
        self._target, self._wait = target, wait

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr
        return functools.partial(self._wait.call, attr)
