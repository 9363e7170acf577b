"""`python -m allsearch.predict`: the command; loading a champion and predicting is allsearch.readers.predict."""

from __future__ import annotations

import argparse
import sys
import warnings

from allsearch.readers.predict import (
    FORMATS,
    SkippedFile,
    collect_images,
    format_predictions,
    load_classifier,
    predict_files,
    resolve_model_uri,
)


def main(argv: list[str] | None = None) -> int:
    from allsearch.core import cli

    parser = cli.CommandParser(
        prog="python -m allsearch.predict",
        description="Predict the class of new images with the champion (or any logged "
                    "allsearch model), through the training preprocessing.")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER",
                        help="image files and/or folders of images (a folder of class folders "
                             "is read as labelled)")
    parser.add_argument("--model", default=None,
                        help="MLflow model URI (models:/NAME@ALIAS, models:/NAME/VERSION, "
                             "runs:/RUN_ID/model) or a run id (default: the newest champion)")
    parser.add_argument("--study", default=None,
                        help="use this study's champion, models:/allsearch-STUDY@champion")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow store holding the model (default: $MLFLOW_TRACKING_URI, "
                             "else sqlite:///mlruns/mlflow.db)")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format")
    parser.add_argument("--unlabelled", action="store_true",
                        help="do not read class-folder names as true classes")
    cli.add_debug_flag(parser)

    def run(args: argparse.Namespace) -> int:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SkippedFile)
            images = collect_images(args.inputs, labelled=not args.unlabelled)
        for warning in caught:
            # One line a person reads per file: no source excerpt, however warnings print.
            if issubclass(warning.category, SkippedFile):
                print(f"warning: {warning.message}", file=sys.stderr)
            else:
                warnings.warn_explicit(warning.message, warning.category, warning.filename,
                                       warning.lineno)
        uri = resolve_model_uri(args.model, study=args.study, tracking_uri=args.tracking_uri)
        loaded = load_classifier(uri, tracking_uri=args.tracking_uri)
        frame = predict_files(loaded, images)
        print(f"model: {uri}; {len(frame)} image(s)", file=sys.stderr)
        print(format_predictions(frame, args.format))
        if "true_class" in frame:
            labelled = frame[frame["true_class"].notna()]
            correct = int((labelled["true_class"] == labelled["class"]).sum())
            print(f"accuracy: {correct}/{len(labelled)} = {correct / len(labelled):.3f} "
                  f"(images in class folders)", file=sys.stderr)
        return 0

    return cli.main_wrapper(run, parser, argv)


if __name__ == "__main__":
    sys.exit(main())
