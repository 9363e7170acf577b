"""`python -m allsearch.confirm`: the command; the confirmation itself is allsearch.engines.confirm."""

from __future__ import annotations

import argparse
import sys

from allsearch.core import config
from allsearch.core.splits import FIELDS
from allsearch.engines.confirm import confirm, render, split_override


def main(argv: list[str] | None = None) -> int:
    from allsearch.core import cli

    parser = cli.CommandParser(prog="python -m allsearch.confirm",
                               description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True, help="the study whose best configurations to confirm")
    parser.add_argument("--top", type=int, default=3, help="how many configurations (default 3)")
    parser.add_argument("--seeds", type=int, default=5,
                        help="fresh (training seed, split seed) pairs per configuration (default 5)")
    parser.add_argument("--data", default=None, help="the dataset (default: the study's)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI")
    parser.add_argument("--record", default=None, metavar="DIR",
                        help="read the study from this record folder and write there")
    parser.add_argument("--precision", default="auto", choices=("auto", "float32", "bfloat16"))
    parser.add_argument("--workers", type=int, default=1,
                        help="processes training at once (default 1; a GPU takes several)")
    parser.add_argument("--name", default=None,
                        help="the confirmation's name (default: STUDY-confirm); another "
                             "confirmation of the same study, e.g. on other data, needs another")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    # The study's own split flags (config.StudyConfig), with no default: the study's split.
    config.add_arguments(parser.add_argument_group(
        "split (default: the study's own)", "confirm under another split than the study's"),
        only=FIELDS, defaults=False)
    cli.add_debug_flag(parser)

    def run(args: argparse.Namespace) -> int:
        table = confirm(study=args.study, top=args.top, seeds=args.seeds, data=args.data,
                        tracking_uri=args.tracking_uri, record=args.record,
                        precision=args.precision, progress=not args.no_progress,
                        workers=args.workers, name=args.name, split=split_override(vars(args)))
        print(render(table))
        return 0

    return cli.main_wrapper(run, parser, argv)


if __name__ == "__main__":
    sys.exit(main())
