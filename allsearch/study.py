"""Run or resume a study: `python -m allsearch.study --trials 50`, and `run()` from Python.

A thin facade (docs/design.md): the settings are allsearch.config.StudyConfig, a study's life
is allsearch.lifecycle, the engines are allsearch.optuna_engine and allsearch.kt_engine. Each
trial trains through allsearch.tracked.run_tracked into MLflow: one parent run per study, one
child run per trial. With --record DIR the runs go to a folder instead (no MLflow needed);
`python -m allsearch.study import DIR` replays them into MLflow.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from allsearch import config as config_mod
from allsearch.config import DEFAULT_STORAGE, StudyConfig
from allsearch.errors import ConfigError, StoreError

__all__ = ["StudyConfig", "run", "run_config", "import_record", "summarize", "main",
           "DEFAULT_STORAGE", "ConfigError", "StoreError"]


def run(config: StudyConfig | None = None, /, *,
        trial_callbacks: Sequence[Callable[..., None]] = (), **settings: Any) -> Any:
    """Run (or resume) a study until it holds `trials` finished trials; returns it.

    Keywords are the fields of allsearch.config.StudyConfig (trials, space, data, sampler,
    ...), over `config` when one is given. `trial_callbacks` are Optuna callbacks called after
    each trial run in this process. Returns the Optuna study, or with engine="keras-tuner" a
    KerasTunerStudy.
    """
    return run_config((config or StudyConfig()).replace(**settings),
                      trial_callbacks=trial_callbacks)


# help(run) and editors show every setting as a keyword, from the one definition.
run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter("config", inspect.Parameter.POSITIONAL_ONLY, default=None),
     inspect.Parameter("trial_callbacks", inspect.Parameter.KEYWORD_ONLY, default=()),
     *(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default)
       for f in StudyConfig.__dataclass_fields__.values())])


def run_config(config: StudyConfig, *, trial_callbacks: Sequence[Callable[..., None]] = ()) -> Any:
    from allsearch import lifecycle

    prepared = lifecycle.prepare(config)
    if prepared.config.engine == "keras-tuner":
        from allsearch import kt_engine

        return kt_engine.run(prepared)
    from allsearch import optuna_engine

    return optuna_engine.run(prepared, trial_callbacks=trial_callbacks)


def import_record(folder: str, *, tracking_uri: str | None = None) -> list[Any]:
    """Replay a record folder (a study run with --record) into MLflow; see allsearch.importer."""
    from allsearch.importer import import_record as replay

    return replay(folder, tracking_uri=tracking_uri)


def summarize(study: Any, *, record: str | None = None, constraints: Sequence[str] = ()) -> str:
    """The closing lines of a study of either engine."""
    if hasattr(study, "study_name"):
        from allsearch.progress import summarize as summarize_optuna

        return summarize_optuna(study, record=record, constraints=constraints)
    from allsearch.kt_engine import summarize as summarize_keras_tuner

    return summarize_keras_tuner(study)


def build_parser() -> argparse.ArgumentParser:
    from allsearch import cli

    parser = argparse.ArgumentParser(
        prog="python -m allsearch.study",
        description="Run or resume a study of the paper's CNN, tracked in MLflow (one parent "
                    "run per study, one child run per trial). `python -m allsearch.study import "
                    "DIR` replays a study recorded with --record DIR into MLflow.")
    config_mod.add_arguments(parser)
    cli.add_debug_flag(parser)
    return parser


def build_import_parser() -> argparse.ArgumentParser:
    from allsearch import cli

    parser = argparse.ArgumentParser(
        prog="python -m allsearch.study import",
        description="Replay a study recorded with --record DIR into MLflow; runs already "
                    "imported are skipped.")
    parser.add_argument("folder", help="the folder given to --record")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or "
                             "sqlite:///mlruns/mlflow.db)")
    cli.add_debug_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    from allsearch import cli

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["import"]:
        def replay(args: argparse.Namespace) -> int:
            for report in import_record(args.folder, tracking_uri=args.tracking_uri):
                print(report.line())
            return 0

        return cli.main_wrapper(replay, build_import_parser(), argv[1:])

    def execute(args: argparse.Namespace) -> int:
        started = time.perf_counter()
        config = config_mod.from_arguments(args)
        study = run_config(config)
        print(summarize(study, record=config.record, constraints=config.constraints))
        print(f"wall time: {time.perf_counter() - started:.0f} s")
        return 0

    return cli.main_wrapper(execute, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
