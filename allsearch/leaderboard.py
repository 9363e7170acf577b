"""`python -m allsearch.leaderboard`: the command; the tables are allsearch.readers.leaderboard."""

from __future__ import annotations

import argparse
import sys

from allsearch.core.errors import ConfigError
from allsearch.readers.confirmed import confirmation_runs, with_confirmation
from allsearch.readers.leaderboard import (
    filter_runs,
    load_study_runs,
    pareto_runs,
    runs_to_table,
    save_best_space,
    sort_by_first_objective,
    write_output,
)
from allsearch.readers.tables import FORMATS, render


def main(argv: list[str] | None = None) -> int:
    from allsearch.core import cli

    parser = cli.CommandParser(
        prog="python -m allsearch.leaderboard",
        description="Export a study's trials as a ranked table in the paper's Table 1 columns, "
                    "beside the paper's best (0.80 validation / 0.82 test accuracy).")
    parser.add_argument("--study", default=None, help="study name (default: the latest study)")
    parser.add_argument("--format", default="markdown", choices=FORMATS, help="output format")
    parser.add_argument("--top", type=int, default=None, help="only the K best rows")
    parser.add_argument("--out", default=None, help="write to this file instead of stdout")
    parser.add_argument("--where", action="append", default=[], metavar="NAME=VALUE",
                        help="only trials with this hyperparameter value, e.g. features=hog_pca "
                             "(repeatable)")
    parser.add_argument("--pareto", action="store_true",
                        help="only the Pareto front of a study of several objectives, sorted "
                             "by its first objective")
    parser.add_argument("--save-space", default=None, metavar="FILE",
                        help="also write the best configuration (by validation accuracy) as a "
                             "search space that samples nothing, e.g. allsearch/spaces/best.yaml")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: sqlite:///mlruns/mlflow.db)")
    cli.add_debug_flag(parser)

    def run(args: argparse.Namespace) -> int:
        if args.top is not None and args.top < 1:
            raise ConfigError(f"--top must be a positive integer, got {args.top}")
        name, runs = load_study_runs(args.study, tracking_uri=args.tracking_uri)
        runs = filter_runs(runs, args.where)
        if runs.empty and args.where:
            raise ConfigError(f"no trial of study '{name}' has {' and '.join(args.where)}")
        if args.pareto:
            runs = pareto_runs(name, runs, tracking_uri=args.tracking_uri)
        table = runs_to_table(runs)
        if args.pareto:
            table = sort_by_first_objective(table, name, tracking_uri=args.tracking_uri)
        elif not args.where:
            table = with_confirmation(table, runs, confirmation_runs(
                name, tracking_uri=args.tracking_uri))
        if args.top is not None:
            table = table.head(args.top)
        text = render(table, args.format)
        if args.save_space:
            _, row = save_best_space(name, runs, args.save_space)
            print(f"study '{name}': trial {row['Trial']} (validation {row['Validation Accuracy']:.3f}) "
                  f"written to {args.save_space} as a space that samples nothing", file=sys.stderr)
        if args.out:
            write_output(args.out, text, "--out")
            print(f"study '{name}': {len(table)} rows written to {args.out}", file=sys.stderr)
        else:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return 0

    return cli.main_wrapper(run, parser, argv)


if __name__ == "__main__":
    sys.exit(main())
