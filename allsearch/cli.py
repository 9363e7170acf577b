"""What every command-line module shares: quiet logs, one-line errors, --debug."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import warnings
from collections.abc import Callable

from allsearch.errors import AllsearchError


def quiet_libraries(threads: int | None = None) -> None:
    """Silence TensorFlow's C++ banner and library chatter a user cannot act on.

    `threads`: TensorFlow's thread count for this process; it can only be set before the
    runtime starts, which happens here (default: $ALLSEARCH_THREADS, else every core).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    if threads is None and os.environ.get("ALLSEARCH_THREADS"):
        from allsearch.hardware import threads_per_worker

        threads = threads_per_worker(1)
    _import_tensorflow_silently(threads)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")
    for name in ("alembic", "optuna", "absl", "tensorflow", "kagglehub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # MLflow logs a store's errors with their tracebacks before raising them; the command
    # says each in one line (--debug shows everything).
    logging.getLogger("mlflow").setLevel(logging.CRITICAL)


def _import_tensorflow_silently(threads: int | None) -> None:
    """TensorFlow 2.21 writes its start-up INFO lines (oneDNN, CUDA probing) straight to
    file descriptor 2, ignoring TF_CPP_MIN_LOG_LEVEL; hide them while it starts."""
    from allsearch.hardware import configure_threads

    if "tensorflow" in sys.modules:
        if threads:
            configure_threads(threads)  # applies only if the runtime has not started yet
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                import tensorflow as tf

                if threads:
                    configure_threads(threads)
                tf.constant(0)  # starts the runtime: the CUDA probe logs here, once
            except ImportError:
                pass  # the real import, later, reports it with its message
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def interrupt(signum: int, frame: object) -> None:
    """A signal handler that ends the work as Ctrl-C does (completed work is kept)."""
    raise KeyboardInterrupt


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and library logs")


def main_wrapper(run: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser,
                 argv: list[str] | None = None, *, tensorflow: bool = True) -> int:
    """Parse, run, and turn user mistakes into one line and a non-zero exit.

    `tensorflow=False`: a command that never trains or predicts starts no TensorFlow runtime.
    """
    args = parser.parse_args(argv)
    if not args.debug and tensorflow:
        quiet_libraries()
    if not args.debug:
        # A warning is one line a person reads, not a source excerpt.
        warnings.formatwarning = lambda message, *rest, **kw: f"warning: {message}\n"
    for sig in (signal.SIGTERM, signal.SIGHUP):
        # `docker stop`, Kubernetes, systemd and a closed terminal end a command as Ctrl-C does.
        signal.signal(sig, interrupt)
    try:
        return run(args)
    except AllsearchError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("interrupted: completed work is saved; run the same command again to resume",
              file=sys.stderr)
        return 130
