"""What every command-line module shares: its parser (no abbreviated flags, a mistake in one
line), quiet logs, one-line errors, --debug."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import warnings
from collections.abc import Callable
from typing import Any, NoReturn

from allsearch.core.errors import AllsearchError
from allsearch.core.hardware import on_interrupt, own_process

__all__ = ["CommandParser", "quiet_libraries", "add_debug_flag", "main_wrapper"]


class CommandParser(argparse.ArgumentParser):
    """Every command's parser: a flag is taken only as written (argparse would read `--time 60`
    as `--timeout 60`, and a new flag could make an old abbreviation mean something else), and
    a mistake is one line and exit code 2, as every other mistake a user can make."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def quiet_libraries(threads: int | None = None) -> None:
    """Silence library chatter a user cannot act on. TensorFlow starts later, quietly, in the
    process that first trains (allsearch.core.hardware.start_tensorflow); `threads` is its thread
    count there (default: $ALLSEARCH_THREADS, else every core)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow sets its loggers' level from this when it is imported (lazily, after this).
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "CRITICAL")
    if threads:
        from allsearch.core.hardware import use_threads

        use_threads(threads)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")
    for name in ("alembic", "optuna", "absl", "tensorflow", "kagglehub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # MLflow logs a store's errors with their tracebacks before raising them; the command
    # says each in one line (--debug shows everything).
    logging.getLogger("mlflow").setLevel(logging.CRITICAL)


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and library logs")


def main_wrapper(run: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser,
                 argv: list[str] | None = None) -> int:
    """Parse, run, and turn user mistakes into one line and a non-zero exit."""
    if not isinstance(parser, CommandParser):  # a programming error: every command uses one
        raise TypeError(f"{parser.prog}: make the parser with allsearch.core.cli.CommandParser")
    args = parser.parse_args(argv)
    own_process()  # a command's process is a study's (hardware.own_process)
    if args.debug:
        os.environ["ALLSEARCH_DEBUG"] = "1"  # worker processes show everything too
    else:
        quiet_libraries()
    if not args.debug:
        # A warning is one line a person reads, not a source excerpt.
        warnings.formatwarning = lambda message, *rest, **kw: f"warning: {message}\n"
    for sig in (signal.SIGTERM, signal.SIGHUP):
        # `docker stop`, Kubernetes, systemd and a closed terminal end a command as Ctrl-C does.
        signal.signal(sig, on_interrupt)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where it is ignored
        signal.signal(signal.SIGINT, on_interrupt)
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
