"""Run or resume a study: `python -m allsearch.study --trials 50`, and from Python
`allsearch.run_study(trials=50)` (a StudyResult; the public API) or `run()` (the study itself).

A thin facade (docs/design.md): the settings are allsearch.core.config.StudyConfig, a study's life
is allsearch.engines.lifecycle, the engines are allsearch.engines.optuna_engine and allsearch.engines.kt_engine. Each
trial trains through allsearch.tracking.tracked.run_tracked into MLflow: one parent run per study, one
child run per trial. With --record DIR the runs go to a folder instead (no MLflow needed);
`python -m allsearch.study import DIR` replays them into MLflow.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from allsearch.core import config as config_mod
from allsearch.core.config import DEFAULT_STORAGE, StudyConfig
from allsearch.core.errors import ConfigError, StoreError
from allsearch.core.process_state import left_as_found

__all__ = ["StudyConfig", "StudyResult", "run_study", "run", "run_config", "import_record",
           "summarize", "main", "DEFAULT_STORAGE", "ConfigError", "StoreError"]


def run(config: StudyConfig | None = None, /, *,
        trial_callbacks: Sequence[Callable[..., None]] = (), **settings: Any) -> Any:
    """Run (or resume) a study until it holds `trials` finished trials; returns it.

    Keywords are the fields of allsearch.core.config.StudyConfig (trials, space, data, sampler,
    ...), over `config` when one is given. `trial_callbacks` are Optuna callbacks called after
    each trial run in this process. Returns the Optuna study, or with engine="keras-tuner" a
    KerasTunerStudy.
    """
    return run_config((config or StudyConfig()).replace(**settings),
                      trial_callbacks=trial_callbacks)


@dataclass(frozen=True)
class StudyResult:
    """Where a finished study is and what it found: what run_study returns.

    The best trial is the champion rule's (the most accurate complete trial that meets every
    constraint), read back from the parent run's summary, as the leaderboard and UI show it.
    """

    study_name: str
    parent_run_id: str  # the study's MLflow parent run (the record folder's, with record=)
    best_trial_number: int | None  # None when no trial completed
    best_params: dict[str, Any]  # its hyperparameters (and knobs), sampled and fixed
    best_metrics: dict[str, float]  # its run's metrics (each metric's last value)
    champion_model_uri: str | None  # models:/allsearch-<study>@champion, once one is registered
    storage_url: str | None  # the Optuna storage (None with engine="keras-tuner")
    tracking_uri: str | None  # the MLflow store (None with record=: the runs are in the folder)

    def __repr__(self) -> str:  # store URLs without their passwords
        from allsearch.core.errors import redact

        shown = {**self.__dict__, **{k: redact(v) for k in ("storage_url", "tracking_uri")
                                     if (v := self.__dict__[k])}}
        return f"StudyResult({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


def run_study(config: StudyConfig | None = None, /, *,
              trial_callbacks: Sequence[Callable[..., None]] = (), **settings: Any) -> StudyResult:
    """Run (or resume) a study, as `python -m allsearch.study` does, and say what it found.

    Keywords are the fields of allsearch.core.config.StudyConfig, the command's flags
    (`trials=50, space="best", data="data/leukemia/Segmented"`), over `config` when one is
    given. Raises allsearch.core.errors.AllsearchError for what a user can get wrong, and
    KeyboardInterrupt when interrupted (completed trials are kept: the same call resumes).
    Callable again in the same process (a notebook): what the study changes in the process
    (logging, signal handlers, warnings filters, the environment, MLflow's global URIs, random
    states; allsearch.core.process_state says exactly what, and what not) is put back when it
    returns.
    """
    config = (config or StudyConfig()).replace(**settings)
    with left_as_found():
        return _result(config, run_config(config, trial_callbacks=trial_callbacks))


# help(run) and editors show every setting as a keyword, from the one definition. (Any: a
# function takes any attribute, and inspect reads this one; FunctionType declares none.)
_function: Any
for _function in (run, run_study):
    _function.__signature__ = inspect.Signature(
        [inspect.Parameter("config", inspect.Parameter.POSITIONAL_ONLY, default=None),
         inspect.Parameter("trial_callbacks", inspect.Parameter.KEYWORD_ONLY, default=()),
         *(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default)
           for f in StudyConfig.__dataclass_fields__.values())],
        return_annotation=_function.__annotations__.get("return"))
del _function


def _result(config: StudyConfig, study: Any) -> StudyResult:
    """The StudyResult of a finished study, read back from its parent run and best run."""
    from allsearch.core.config import absolute_sqlite
    from allsearch.core.contract import CHAMPION_ALIAS, PARENT_ATTR, model_name
    from allsearch.core.space import HParams
    from allsearch.engines.storage import storage_url

    optuna_study = hasattr(study, "study_name")
    name = study.study_name if optuna_study else study.name
    parent_id = study.user_attrs[PARENT_ATTR] if optuna_study else study.parent_id
    if config.record is not None:
        from allsearch.tracking.recorder import read_runs

        recorded = read_runs(config.record)
        tracking_uri = None

        def read(run_id: str) -> tuple[dict[str, str], dict[str, str], dict[str, float]]:
            run = recorded[run_id]
            return run.tags, run.params, run.metrics
    else:
        from allsearch.tracking.store import open_client, resolve_tracking_uri

        tracking_uri = resolve_tracking_uri(config.tracking_uri)
        client = open_client(tracking_uri)

        def read(run_id: str) -> tuple[dict[str, str], dict[str, str], dict[str, float]]:
            data = client.get_run(run_id).data
            return data.tags, data.params, data.metrics

    tags = read(parent_id)[0]
    best_run = tags.get("best.mlflow_run_id")
    _, params, metrics = read(best_run) if best_run else ({}, {}, {})
    trial = tags.get("best.trial_number")
    return StudyResult(
        study_name=name, parent_run_id=parent_id,
        best_trial_number=int(trial) if trial else None,
        best_params=HParams.from_params(params, prefix="").to_dict() if best_run else {},
        best_metrics=dict(metrics),
        champion_model_uri=(f"models:/{model_name(name)}@{CHAMPION_ALIAS}"
                            if tags.get("champion") else None),
        storage_url=(absolute_sqlite(storage_url(config.storage, record=config.record))
                     if optuna_study else None),
        tracking_uri=tracking_uri)


def run_config(config: StudyConfig, *, trial_callbacks: Sequence[Callable[..., None]] = ()) -> Any:
    from allsearch.engines import lifecycle

    prepared = lifecycle.prepare(config)
    if prepared.config.engine == "keras-tuner":
        from allsearch.engines import kt_engine

        return kt_engine.run(prepared)
    from allsearch.engines import optuna_engine

    return optuna_engine.run(prepared, trial_callbacks=trial_callbacks)


def import_record(folder: str, *, tracking_uri: str | None = None) -> list[Any]:
    """Replay a record folder (a study run with --record) into MLflow; see allsearch.engines.importer."""
    from allsearch.engines.importer import import_record as replay

    return replay(folder, tracking_uri=tracking_uri)


def summarize(study: Any, *, record: str | None = None, constraints: Sequence[str] = ()) -> str:
    """The closing lines of a study of either engine."""
    if hasattr(study, "study_name"):
        from allsearch.engines.progress import summarize as summarize_optuna

        return summarize_optuna(study, record=record, constraints=constraints)
    from allsearch.engines.kt_engine import summarize as summarize_keras_tuner

    return summarize_keras_tuner(study)


def build_parser() -> argparse.ArgumentParser:
    from allsearch.core import cli

    parser = cli.CommandParser(
        prog="python -m allsearch.study",
        description="Run or resume a study of the paper's CNN family, or of a network of your "
                    "own (--model MODULE:FUNCTION), tracked in MLflow (one parent run per "
                    "study, one child run per trial). `python -m allsearch.study import DIR` "
                    "replays a study recorded with --record DIR into MLflow.")
    config_mod.add_arguments(parser)
    cli.add_debug_flag(parser)
    return parser


def build_import_parser() -> argparse.ArgumentParser:
    from allsearch.core import cli

    parser = cli.CommandParser(
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
    from allsearch.core import cli

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
