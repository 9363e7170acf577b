"""Serve a study database to many workers over gRPC: Optuna's storage proxy, with heartbeats.

    python -m allsearch.proxy --storage postgresql://user@db-host/optuna [--host 0.0.0.0]
                              [--port 13000] [--threads 16]

Workers then run with `--storage grpc://PROXY-HOST:13000`: they hold no database connection;
the proxy holds at most --threads. A worker that dies mid-trial is noticed as on the database
itself (its heartbeats go through the proxy; the grace period, $ALLSEARCH_GRACE_S, is the
proxy's). The connection is neither encrypted nor authenticated: listen on a private network
only. Ctrl-C or SIGTERM stops it. See docs/scale-out.md.
"""

from __future__ import annotations

import argparse
import sys

from allsearch.core.errors import ConfigError

__all__ = ["main", "DEFAULT_PORT", "DEFAULT_THREADS"]

DEFAULT_PORT = 13000  # Optuna's
# Serving threads, and so database connections: enough for a few hundred workers whose
# calls take milliseconds each (docs/scale-out.md has the measurements).
DEFAULT_THREADS = 16


def main(argv: list[str] | None = None) -> int:
    from allsearch.core import cli

    parser = cli.CommandParser(prog="python -m allsearch.proxy",
                               description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default=None,
                        help="the study database (default: $ALLSEARCH_STORAGE, else "
                             "sqlite:///mlruns/optuna.db); postgresql://... for many machines")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1, this machine only; "
                             "0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to listen on (default {DEFAULT_PORT})")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help="serving threads, each with at most one database connection "
                             f"(default {DEFAULT_THREADS})")
    cli.add_debug_flag(parser)

    def run(args: argparse.Namespace) -> int:
        from allsearch.core.errors import redact
        from allsearch.engines.storage import open_proxied_storage, serve_proxy, storage_url

        if not 1 <= args.threads <= 1024:
            raise ConfigError(f"--threads must be an int in [1, 1024], got {args.threads}")
        if not 1 <= args.port <= 65535:
            raise ConfigError(f"--port must be an int in [1, 65535], got {args.port}")
        if not args.debug:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per study
        url = storage_url(args.storage)
        storage = open_proxied_storage(url, connections=args.threads)

        def ready() -> None:
            print(f"serving {redact(url)} on grpc://{args.host}:{args.port} ({args.threads} "
                  f"threads); workers: --storage grpc://HOST:{args.port}; Ctrl-C stops",
                  flush=True)

        try:
            serve_proxy(storage, host=args.host, port=args.port, threads=args.threads,
                        on_ready=ready)
        except KeyboardInterrupt:
            print("proxy stopped", flush=True)
        return 0

    return cli.main_wrapper(run, parser, argv)


if __name__ == "__main__":
    sys.exit(main())
