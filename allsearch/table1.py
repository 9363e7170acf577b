"""`python -m allsearch.table1`: the command; reproducing Table 1 is allsearch.engines.table1."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from allsearch.core.hardware import PRECISIONS
from allsearch.engines.table1 import render, run


def main(argv: list[str] | None = None) -> int:
    from allsearch.core import cli

    parser = cli.CommandParser(
        prog="python -m allsearch.table1",
        description="Reproduce the paper's Table 1 over several seeds and set it beside the "
                    "paper's numbers. Completed runs are kept: running it again only trains "
                    "what is missing.")
    parser.add_argument("--data", default=None,
                        help="a dataset folder, or a folder holding the variants "
                             "(default: data/leukemia, downloaded when missing)")
    parser.add_argument("--variants", nargs="+", default=None,
                        help="sub-folders of --data to run (default: Original Segmented, those present)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per configuration (default 5)")
    parser.add_argument("--format", default="markdown", choices=("markdown", "csv", "json"))
    parser.add_argument("--out", default=None, help="also write the table to this file")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="auto (default): bfloat16 where the CPU computes it natively")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    cli.add_debug_flag(parser)

    def execute(args: argparse.Namespace) -> int:
        table = run(data=args.data, variants=args.variants, seeds=args.seeds,
                    tracking_uri=args.tracking_uri, precision=args.precision,
                    progress=not args.no_progress)
        text = render(table, args.format)
        if args.out:
            Path(args.out).write_text(text, encoding="utf-8")
        sys.stdout.write(text)
        return 0

    return cli.main_wrapper(execute, parser, argv)


if __name__ == "__main__":
    sys.exit(main())
