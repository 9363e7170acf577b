"""`python -m allsearch.data FOLDER`: load a dataset folder and print what was found (classes, duplicates, skipped files, split, fingerprint), or write it as a bundle (--bundle FILE.npz)."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import asdict

from allsearch.core import config
from allsearch.core.contract import COLORS
from allsearch.data.dataset import DataReport, load_dataset, save_bundle
from allsearch.data.download import DEFAULT_DATA
from allsearch.data.images import (
    IMAGE_SIZE,
)
from allsearch.data.pixel_cache import CacheWarning


def _format_report(report: DataReport) -> str:
    lines = [f"data:        {report.root}",
             f"files:       {report.n_files} images in {len(report.class_counts)} classes",
             "classes:     " + ", ".join(f"{k} {v}" for k, v in report.class_counts.items()),
             f"duplicates:  {report.duplicates_dropped} exact duplicate(s) dropped before the split",
             f"skipped:     {len(report.skipped)} file(s)"]
    lines += [f"  - {path}: {reason}" for path, reason in report.skipped[:20]]
    if len(report.skipped) > 20:
        lines.append(f"  ... and {len(report.skipped) - 20} more (see --json)")
    lines += ["split:       " + ", ".join(f"{k} {v}" for k, v in report.split_sizes.items()),
              f"fingerprint: {report.fingerprint}",
              f"load time:   {report.load_time_s:.2f} s ({_cache_state(report)})",
              f"pixels:      {_pixels_place(report)}"]
    return "\n".join(lines)


def _pixels_place(report: DataReport) -> str:
    if report.pixels == "disk":
        return "streamed from the pixel cache file (disk)"
    return "in memory"


def _cache_state(report: DataReport) -> str:
    if report.cache_hit:
        return "cache hit"
    return "decoded, cache written" if report.cache_written else "decoded, no cache written"


def main(argv: list[str] | None = None) -> int:
    from allsearch.core import cli

    parser = cli.CommandParser(
        prog="python -m allsearch.data",
        description="Show what the data pipeline sees in a folder of class folders.")
    parser.add_argument("path", nargs="?", default=None,
                        help=f"folder of class folders (default: {DEFAULT_DATA}, downloaded when missing)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--split-seed", type=int, default=42, help="seed of the 70/15/15 split")
    parser.add_argument("--no-cache", action="store_true", help="decode again, ignoring the cache")
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE,
                        help=f"side in pixels of every image (default {IMAGE_SIZE})")
    parser.add_argument("--color", choices=COLORS, default="gray",
                        help="gray (default) or rgb pixels")
    config.add_arguments(parser, only=("pixels",))
    parser.add_argument("--bundle", default=None, metavar="FILE.npz",
                        help="also write the split dataset as one file, for a machine without "
                             "the images: python -m allsearch.study --data FILE.npz")
    cli.add_debug_flag(parser)

    def run(args: argparse.Namespace) -> int:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the report lists every skipped file itself
            warnings.simplefilter("always", CacheWarning)
            dataset = load_dataset(args.path, split_seed=args.split_seed, use_cache=not args.no_cache,
                                   image_size=args.image_size, color=args.color,
                                   pixels=args.pixels)
        if args.json:
            print(json.dumps(asdict(dataset.report), indent=2))
        else:
            print(_format_report(dataset.report))
        if args.bundle:
            written = save_bundle(args.path or dataset.report.root, args.bundle,
                                  image_size=args.image_size, color=args.color)
            print(f"bundle:      {written} ({written.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)
        return 0

    return cli.main_wrapper(run, parser, argv)


if __name__ == "__main__":
    sys.exit(main())
