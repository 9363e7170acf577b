"""`python -m allsearch.ui`: the command; starting the servers is allsearch.readers.ui."""

from __future__ import annotations

import argparse
import signal
import sys
import time

from allsearch.core.errors import StoreError
from allsearch.readers.ui import DEFAULT_PORT, HOST, runs_page, start_ui


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    from allsearch.core import cli

    parser = cli.CommandParser(prog="python -m allsearch.ui",
                               description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port of the MLflow UI on {HOST} (default {DEFAULT_PORT})")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow store (default: $MLFLOW_TRACKING_URI, else "
                             "sqlite:///mlruns/mlflow.db)")
    parser.add_argument("--storage", default=None,
                        help="Optuna storage for optuna-dashboard (default: $ALLSEARCH_STORAGE, "
                             "else sqlite:///mlruns/optuna.db)")
    parser.add_argument("--no-dashboard", action="store_true",
                        help="do not start optuna-dashboard even when it is installed")
    cli.add_debug_flag(parser)

    def run(args: argparse.Namespace) -> int:
        # `kill`, a closed terminal or an IDE's stop button end the servers too, as Ctrl-C does.
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _interrupt)
        with start_ui(port=args.port, tracking_uri=args.tracking_uri, storage=args.storage,
                      dashboard=not args.no_dashboard) as servers:
            print(f"MLflow UI: {servers.mlflow_url}", flush=True)
            for page in servers.studies:
                experiment = "" if page.experiment == page.study else f", experiment '{page.experiment}'"
                print(f"  study '{page.study}' ({page.trial_runs} trial runs{experiment}): "
                      f"{runs_page(servers.mlflow_url, page.experiment_id)}", flush=True)
            if servers.dashboard_url:
                print(f"optuna-dashboard: {servers.dashboard_url}", flush=True)
            elif servers.dashboard_note:
                print(servers.dashboard_note, flush=True)
            elif not args.no_dashboard:
                print("(optuna-dashboard is not installed: pip install -e .[dashboard])",
                      flush=True)
            print("Ctrl-C stops", flush=True)
            try:
                while all(p.poll() is None for p in servers.processes):
                    time.sleep(1)
            except KeyboardInterrupt:
                return 0
        raise StoreError("a UI server stopped by itself; run with --debug to see why")

    return cli.main_wrapper(run, parser, argv)


if __name__ == "__main__":
    sys.exit(main())
