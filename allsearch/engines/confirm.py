"""Confirm a study's best configurations on seeds and splits the search never saw.

    python -m allsearch.confirm --study NAME [--top 3] [--seeds 5] [--data PATH] [--record DIR]
                                [--split KIND ...]

A configuration chosen on some seeds looks better on those seeds than on new ones (the
winner's curse of every tuning study). This re-trains the study's top configurations by
validation accuracy on fresh pairs of (training seed, split seed): split seed i is the study's
split seed + 1000 + i, training seed i is the study's first seed + 1000 + i, duplicates dropped
before every split (allsearch.data.dataset). Each split is of the study's kind (random, groups or
blocks, with its settings, from the study's parent run: allsearch.core.splits), so a study split by
patient is confirmed on splits by patient too; so are its network (model_factory, a user's
imported by name) and its images' size and colour. `--split blocks --block-size N --embargo M`
(or `--split groups ...`, `--split random`: the study's own split flags) confirms under another
split instead, e.g. a study searched on random splits under leakage-aware blocks. Every run is
a child run of one confirmation parent run, `<study>-confirm` (`<study>-confirm-<kind>` under
another split), in the study's experiment, tagged `allsearch.confirms=<study>`, its split
logged on the parent and on every run; running the same command again trains only what is
missing, and a confirmation never holds two splits (another split needs another --name). The
result is each configuration's test accuracy mean ± sd, 95% interval and n over the fresh
pairs, ranked by that mean.
With --record DIR it reads the study from a record folder and writes there (no MLflow).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from allsearch.core.config import StudyConfig
from allsearch.core.contract import COLLAPSED, CONFIRMS, RECALL_PREFIX, STATE, Store
from allsearch.core.errors import ConfigError, DataError, StoreError
from allsearch.core.hardware import Precision, resolve_precision
from allsearch.core.space import HParams
from allsearch.core.splits import FIELDS, SplitSettings, label_of
from allsearch.engines import lifecycle
from allsearch.engines.progress import count_bar
from allsearch.tracking.tracked import config_key, find_duplicate, run_tracked

__all__ = ["Candidate", "candidates", "confirm", "summary", "CONFIRMS"]

ENGINE = "confirm"
SUFFIX = "-confirm"
OFFSET = 1000  # fresh seeds and split seeds start this far from the study's


@dataclass(frozen=True)
class Candidate:
    """A configuration of the study, as the search ranked it."""

    rank: int  # 1 = best validation accuracy in the search
    hparams: HParams
    search_val: float
    search_test: float
    search_n: int
    trial: str
    run_id: str


def candidates(runs: pd.DataFrame, top: int) -> list[Candidate]:
    """The study's `top` complete configurations by validation accuracy (mean over seeds),
    among those that meet the study's constraints (where it has some: the champion's rule)."""
    from allsearch.readers.leaderboard import complete_configurations

    complete = complete_configurations(runs, "to confirm")
    found = []
    for rank, (_, row) in enumerate(complete.head(top).iterrows(), start=1):
        run = runs.loc[runs["run_id"] == row["Run ID"]].iloc[0]
        found.append(Candidate(rank, HParams.from_params(run, where=f"run {row['Run ID']}"),
                               float(row["Validation Accuracy"]), float(row["Test Accuracy"]),
                               int(row["n"]), str(row["Trial"]), str(row["Run ID"])))
    return found


def _train_all(jobs: list[_Job], store: Store, workers: int, *, on_run: Callable[[], Any]) -> None:
    """Every job's pairs: in this process, or in `workers` spawned processes."""
    if workers == 1:
        for job in jobs:
            _train_pair(job, store=store, on_run=on_run)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=workers,
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_train_pair, job, candidate=c)
                   for job in jobs for c in job.candidates]
        for future in as_completed(futures):
            future.result()
            on_run()


def confirm(*, study: str, top: int = 3, seeds: int = 5, data: str | None = None,
            tracking_uri: str | None = None, record: str | None = None,
            precision: str = "auto", progress: bool = True, workers: int = 1,
            name: str | None = None, split: SplitSettings | None = None) -> pd.DataFrame:
    """Train each of the study's `top` configurations on `seeds` fresh (seed, split) pairs
    (only the pairs not trained yet), in `workers` processes, then return summary(). `split`:
    split the data so instead of as the study did (e.g. SplitSettings("blocks", block_size=50,
    embargo=5)). `name` names the confirmation (default `<study>-confirm`, or
    `<study>-confirm-<kind>` under another split; another one, e.g. on another dataset, needs
    another name)."""
    for name_, value in (("top", top), ("seeds", seeds), ("workers", workers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"--{name_} must be a positive integer, got {value!r}")
    store, study_parent = _open(study, tracking_uri, record)
    runs = store.runs_frame(f"tags.`mlflow.parentRunId` = '{study_parent}'")
    chosen = candidates(runs, top)
    settings = store.run_params(study_parent)
    first_seed, split_seed = int(settings.get("seed", 0)), int(settings.get("split_seed", 42))
    own = study_split(settings)
    if split is not None:
        split = SplitSettings.from_params(split.params())  # checked as a study's would be
    split = split or own
    model, images = study_network(settings)
    from allsearch.training.user_model import load

    load(model)  # a network that cannot be imported here is said before anything is written
    data = data or settings.get("data")
    if not data or not Path(data).exists():
        raise DataError(f"the study's data '{data}' is not here; pass --data with the same "
                        f"dataset (a folder of class folders or a bundle)")
    resolved, reason = resolve_precision(precision)
    name = name or f"{study}{SUFFIX}{'' if split == own else f'-{split.kind}'}"
    _one_split(store, name, split)
    parent = lifecycle.open_parent(store, name, {
        "confirms": study, "study_parent": study_parent, "top": top, "seeds": seeds,
        "data": str(data), "precision": resolved, "precision_reason": reason, **split.params(),
        "seed_pairs": [[first_seed + OFFSET + i, split_seed + OFFSET + i] for i in range(seeds)]})
    store.set_tags(parent, {CONFIRMS: study, "engine": ENGINE})
    store.set_tags(study_parent, {"confirmed_by": parent})
    status = "FINISHED"
    bar = count_bar(len(chosen) * seeds, progress, "confirm")
    jobs = [_Job(store_of=(study, tracking_uri, record), parent=parent, data=str(data),
                 precision=resolved, pair=i, seed=first_seed + OFFSET + i,
                 split_seed=split_seed + OFFSET + i, split=split, candidates=tuple(chosen),
                 model=model, images=images, pixels=settings.get("pixels", "auto"))
            for i in range(seeds)]
    try:
        _train_all(jobs, store, workers, on_run=lambda: bar.update(1))
    except BaseException as exc:
        status = lifecycle.ended_by(exc)
        raise
    finally:
        bar.close()
        table = summary(store.runs_frame(f"tags.`mlflow.parentRunId` = '{parent}'"), chosen,
                        split=split)
        if len(table):
            store.log_text(parent, table.to_csv(index=False), "confirmed.csv")
            store.log_text(parent, render(table), "confirmed.md")
        lifecycle.finish(store, parent, StudyConfig(study_name=name), status)
    return table


@dataclass(frozen=True)
class _Job:
    """One fresh (seed, split) pair to train the candidates on; picklable for a worker."""

    store_of: tuple[str, str | None, str | None]  # (study, tracking_uri, record)
    parent: str
    data: str
    precision: Precision
    pair: int
    seed: int
    split_seed: int
    split: SplitSettings
    candidates: tuple[Candidate, ...]
    model: str  # the study's network, by name (allsearch.training.user_model.load)
    images: tuple[int, str]  # the study's --image-size and --color
    pixels: str = "auto"  # where the study kept its pixels (--pixels), as the pairs do


def _train_pair(job: _Job, *, store: Store | None = None, candidate: Candidate | None = None,
                on_run: Any = None) -> None:
    """Train the candidates (or one) on the job's pair, skipping what is done already."""
    if store is None:  # a worker process: its own connection to the store
        from allsearch.core import cli

        cli.quiet_libraries()
        store, _ = _open(*job.store_of)
    from allsearch.training.user_model import load

    factory = load(job.model)
    chosen = [candidate] if candidate is not None else list(job.candidates)
    dataset = _dataset(job.data, job.split_seed, job.split, chosen, job.images, job.pixels)
    for c in chosen:
        key = config_key(c.hparams, seeds=[job.seed], dataset=dataset, precision=job.precision,
                         factory=factory)
        if find_duplicate(store, job.parent, key) is None:
            run_tracked(
                store, parent_id=job.parent, name=f"confirm-{c.rank}-{job.pair}",
                dataset=dataset, hparams=c.hparams, seeds=[job.seed], precision=job.precision,
                params={**lifecycle.base_params(dataset, ENGINE), "seed": job.seed,
                        "config_rank": c.rank, "trial_number": c.trial},
                tags={"engine": ENGINE, "config_rank": c.rank, "search_run": c.run_id,
                      "worker": lifecycle.worker_id()}, factory=factory)
        if on_run is not None:
            on_run()


def _open(study: str, tracking_uri: str | None, record: str | None) -> tuple[Store, str]:
    """The store holding the study (MLflow, or a record folder) and its parent run's id."""
    if record is not None:
        from allsearch.tracking.recorder import Recorder

        store: Store = Recorder(record, study)
    else:
        from allsearch.tracking.store import find_study_parent
        from allsearch.tracking.tracking import Tracker

        find_study_parent(study, tracking_uri=tracking_uri)  # a one-line error if it is not there
        store = Tracker(study, tracking_uri=tracking_uri)
    parent = store.find_parent(study)
    if parent is None:
        raise StoreError(f"no study named '{study}' in the {store.location}")
    return store, parent


def study_split(settings: dict[str, Any]) -> SplitSettings:
    """How the study split its data, from its parent run's params (text in MLflow, the
    values themselves in a record; a study from before splits had a kind was random)."""
    try:
        return SplitSettings.from_params(settings)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (the study's parent run's params); run the study "
                          f"again") from None


def _one_split(store: Any, name: str, split: SplitSettings) -> None:
    """A ConfigError where the confirmation `name` exists with another split: its means
    would mix two kinds of split."""
    found = store.find_parent(name)
    params = store.run_params(found) if found is not None else {}
    if "split" in params and SplitSettings.from_params(params) != split:
        raise ConfigError(f"confirmation '{name}' holds splits '{label_of(params)}', not "
                          f"'{split.label()}'; a confirmation never mixes two splits: give "
                          f"this one another --name")


def split_override(values: dict[str, Any]) -> SplitSettings | None:
    """The split the confirm command's split flags ask for (None: the study's own); flags
    without --split are a ConfigError."""
    given = {k: v for k, v in values.items() if k in FIELDS and v is not None}
    if not given:
        return None
    if "split" not in given:
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in given)
        raise ConfigError(f"{flags} go(es) with --split KIND (e.g. --split blocks --block-size "
                          f"50 --embargo 5); without --split the study's own split is used")
    return SplitSettings.from_params(given)


def study_network(settings: dict[str, Any]) -> tuple[str, tuple[int, str]]:
    """The study's network (its model_factory) and images (size, colour), from its parent
    run's params; a study from before these settings trained the paper's, on 100 px gray."""
    from allsearch.core.contract import BUILT_IN_MODEL, COLORS, MODEL_FACTORY

    model = str(settings.get(MODEL_FACTORY) or BUILT_IN_MODEL)
    size, color = str(settings.get("image_size") or 100), str(settings.get("color") or "gray")
    if not size.isdigit() or color not in COLORS:
        raise ConfigError(f"the study's image settings (image_size={size!r}, color={color!r}, "
                          f"its parent run's params) are not images; run the study again")
    return model, (int(size), color)


def _dataset(data: str, split_seed: int, split: SplitSettings, chosen: list[Candidate],
             images: tuple[int, str], pixels: str) -> Any:
    from allsearch.data.dataset import load_dataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the study reported its skipped files
        dataset = load_dataset(data, split_seed=split_seed, split=split, image_size=images[0],
                               color=images[1], pixels=pixels)  # type: ignore[arg-type]
        if any(c.hparams.features != "pixels" for c in chosen):
            from allsearch.data.features import add_hog_pca

            dataset = add_hog_pca(dataset)  # PCA fitted on this split's train images only
    return dataset


def summary(runs: pd.DataFrame, chosen: list[Candidate], *,
            split: SplitSettings | None = None) -> pd.DataFrame:
    """Per configuration: its search figures beside the confirmed ones (mean ± sd, 95%
    t-interval clipped to [0, 1], n, per-class recall) and the split they were confirmed on
    (`split`, else the runs' own), best confirmed mean first."""
    from allsearch.readers.confirmed import mean_interval, split_labels

    label = split.label() if split is not None else ", ".join(sorted(set(split_labels(runs))))

    rows = []
    complete = runs[runs.get(f"tags.{STATE}", pd.Series(dtype=str)) == "COMPLETE"] if len(runs) else runs
    recalls = sorted(c for c in runs.columns if c.startswith(f"metrics.{RECALL_PREFIX}"))
    for c in chosen:
        mine = complete[complete["tags.config_rank"] == str(c.rank)] if len(complete) else complete
        mean, sd, low, high, n = mean_interval(mine["metrics.test_accuracy"] if len(mine) else [])
        row = {"Search Rank": c.rank, "Trial": c.trial, "Split": label, "Search Val": c.search_val,
               "Search Test": c.search_test, "Search n": c.search_n,
               "Confirmed Test": mean, "Confirmed Test SD": sd, "CI95 low": low,
               "CI95 high": high, "n": n,
               "Confirmed Val": float(mine["metrics.val_accuracy"].astype(float).mean()) if n else math.nan,
               "Collapsed": int((mine.get(f"tags.{COLLAPSED}", pd.Series(dtype=str)) == "true").sum())
               if n else 0}
        for column in recalls:
            row["Recall " + column[len(f"metrics.{RECALL_PREFIX}"):]] = (
                float(mine[column].astype(float).mean()) if n else math.nan)
        row["hparams"] = " ".join(f"{k}={v}" for k, v in c.hparams.to_dict().items())
        rows.append(row)
    table = pd.DataFrame(rows)
    if len(table):
        table = table.sort_values("Confirmed Test", ascending=False, na_position="last")
    return table.reset_index(drop=True)


def render(table: pd.DataFrame) -> str:
    from allsearch.readers.tables import markdown

    def number(v: Any) -> str:
        return "" if isinstance(v, float) and math.isnan(v) else (f"{v:.3f}" if isinstance(v, float) else str(v))

    shown = pd.DataFrame({
        "Search Rank": table["Search Rank"], "Trial": table["Trial"], "Split": table["Split"],
        "Search Val (n)": [f"{v:.3f} ({n})" for v, n in zip(table["Search Val"], table["Search n"], strict=True)],
        "Confirmed Test": [number(m) + ("" if math.isnan(s) else f" ± {s:.3f}")
                           for m, s in zip(table["Confirmed Test"], table["Confirmed Test SD"], strict=True)],
        "95% CI": ["" if math.isnan(lo) else f"[{lo:.3f}, {hi:.3f}]"
                   for lo, hi in zip(table["CI95 low"], table["CI95 high"], strict=True)],
        "n": table["n"], "Confirmed Val": table["Confirmed Val"].map(number),
        **{c: table[c].map(number) for c in table.columns if c.startswith("Recall ")},
        "Collapsed": table["Collapsed"], "Configuration": table["hparams"]})
    return markdown(shown)
