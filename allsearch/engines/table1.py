"""The paper's Table 1, reproduced over seeds: `python -m allsearch.table1 [--seeds 5]`.

allsearch/spaces/table1.yaml holds the paper's four configurations and the numbers it reported (one run
each). Each configuration is trained with N seeds (seed s: training seed s and split seed
42 + s, so the spread covers both the initialization and the split) on each image variant,
tracked like any study (experiment `table1`, one parent run per variant), and read back through
the leaderboard's one code path. The result sets mean ± sd and a 95% confidence interval of
test accuracy beside the paper's single numbers.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from allsearch.core.errors import ConfigError, DataError, SpaceError
from allsearch.core.hardware import resolve_precision
from allsearch.core.space import SPACE_DIR, HParams
from allsearch.engines.progress import count_bar

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = ["Table1Config", "load_table1", "run", "reproduce", "DEFAULT_VARIANTS"]

DEFAULT_VARIANTS = ("Original", "Segmented")
PAPER_METRICS = ("val_accuracy", "val_prediction_time_s", "test_accuracy", "test_prediction_time_s")
EXPERIMENT = "table1"
BASE_SPLIT_SEED = 42


@dataclass(frozen=True)
class Table1Config:
    """One row of the paper's Table 1: the hyperparameters and what the paper reported."""

    hparams: HParams
    paper: dict[str, float]

    @property
    def label(self) -> str:
        h = self.hparams
        return f"epochs={h.epochs}, batch={h.batch_size}, loss={h.loss}"


def load_table1(path: str | Path | Traversable = SPACE_DIR / "table1.yaml") -> list[Table1Config]:
    where = str(path)
    try:
        raw = yaml.safe_load((Path(path) if isinstance(path, str) else path).read_text(
            encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SpaceError(f"{where}: cannot be read as YAML ({type(exc).__name__})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("configurations"), list):
        raise SpaceError(f"{where}: needs a 'configurations' list of {{hparams, paper}} entries")
    unknown = sorted(set(raw) - {"name", "fixed", "configurations", "description"})
    if unknown:
        raise SpaceError(f"{where}: unknown key(s) {unknown}")
    fixed = raw.get("fixed") or {}
    configs = []
    for i, entry in enumerate(raw["configurations"]):
        if not isinstance(entry, dict) or set(entry) != {"hparams", "paper"}:
            raise SpaceError(f"{where}: configurations[{i}] must have exactly 'hparams' and 'paper'")
        hparams = HParams.from_dict({**fixed, **entry["hparams"]},
                                    where=f"{where}: configurations[{i}].hparams")
        paper = entry["paper"]
        bad = sorted(set(paper) - set(PAPER_METRICS))
        if bad:
            raise SpaceError(f"{where}: configurations[{i}].paper has unknown metric(s) {bad}; "
                             f"allowed: {list(PAPER_METRICS)}")
        configs.append(Table1Config(hparams, {k: float(v) for k, v in paper.items()}))
    return configs


def _variant_folders(data: str | None, variants: list[str] | None) -> list[Path]:
    """Dataset folders to run: `data` itself, or its sub-folders named by `variants`."""
    from allsearch.data.download import resolve_data_path

    if data is None:
        root = resolve_data_path(None).parent  # data/leukemia, holding Original and Segmented
        names = variants or [v for v in DEFAULT_VARIANTS if (root / v).is_dir()]
    else:
        root = resolve_data_path(data)
        if variants is None:
            present = [v for v in DEFAULT_VARIANTS if (root / v).is_dir()]
            if not present:
                return [root]  # a dataset folder itself: one variant
            names = present
        else:
            names = variants
    folders = [root / name for name in names]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        raise DataError(f"variant folder(s) {missing} do not exist; --variants names "
                        f"sub-folders of --data (e.g. Original Segmented)")
    return folders


def run(*, data: str | None = None, variants: list[str] | None = None, seeds: int = 5,
        tracking_uri: str | None = None, precision: str = "auto",
        table_file: str | Path | Traversable = SPACE_DIR / "table1.yaml", progress: bool = True) -> pd.DataFrame:
    """Train every missing (variant, configuration, seed) run, then return the table."""
    from allsearch.core.hardware import package_versions
    from allsearch.data.dataset import load_dataset
    from allsearch.engines.lifecycle import open_parent
    from allsearch.tracking.tracked import run_tracked
    from allsearch.tracking.tracking import Tracker

    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"--seeds must be a positive integer, got {seeds!r}")
    configs = load_table1(table_file)
    folders = _variant_folders(data, variants)
    precision, precision_reason = resolve_precision(precision)
    tracker = Tracker(EXPERIMENT, tracking_uri=tracking_uri)
    todo = [(folder, i, s) for folder in folders for i in range(len(configs)) for s in range(seeds)]
    bar = count_bar(len(todo), progress, "table1")
    parents: dict[str, str] = {}
    for folder in folders:
        # One parent per variant and precision: runs in bf16 and float32 are not pooled.
        study = f"table1-{folder.name}-{precision}"
        parent = open_parent(tracker, study, {
            "study_name": study, "data": str(folder), "variant": folder.name,
            "table_file": str(table_file), "precision": precision,
            "precision_reason": precision_reason})
        parents[folder.name] = parent
        done = _done(tracker, parent)
        try:
            for seed in range(seeds):
                if all((i, seed) in done for i in range(len(configs))):
                    bar.update(len(configs))
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    dataset = load_dataset(folder, split_seed=BASE_SPLIT_SEED + seed)
                for i, config in enumerate(configs):
                    if (i, seed) not in done:
                        run_tracked(
                            tracker, parent_id=parent, name=f"config{i + 1}-seed{seed}",
                            dataset=dataset, hparams=config.hparams, seeds=[seed],
                            precision=precision,
                            params={"engine": "table1", "config_index": i, "seed": seed,
                                    "split_seed": dataset.split_seed, "variant": dataset.variant,
                                    "data_fingerprint": dataset.fingerprint,
                                    **{f"version.{k}": v for k, v in package_versions().items()}},
                            tags={"engine": "table1"})
                    bar.update(1)
        finally:
            tracker.end_run(parent)
    bar.close()
    table = reproduce(tracker, parents, configs, precision=precision)
    for parent in parents.values():
        tracker.log_text(parent, render(table), "table1.md")
        tracker.log_text(parent, table.to_csv(index=False), "table1.csv")
    return table


def _done(tracker: Any, parent: str) -> set[tuple[int, int]]:
    runs = tracker.runs_frame(f"tags.`mlflow.parentRunId` = '{parent}' and tags.state = 'COMPLETE'")
    if runs.empty:
        return set()
    return {(int(i), int(s)) for i, s in zip(runs["params.config_index"], runs["params.seed"],
                                             strict=True)}


def reproduce(tracker: Any, parents: dict[str, str], configs: list[Table1Config], *,
              precision: str = "") -> pd.DataFrame:
    """Our mean ± sd and 95% CI per (variant, configuration), beside the paper's numbers."""
    from scipy import stats

    from allsearch.readers.leaderboard import runs_to_table

    rows = []
    for variant, parent in parents.items():
        runs = tracker.runs_frame(f"tags.`mlflow.parentRunId` = '{parent}'")
        table = runs_to_table(runs)
        for config in configs:
            h = config.hparams
            match = table[(table["State"] == "COMPLETE") & (table["epochs"] == h.epochs)
                          & (table["batch_size"] == h.batch_size) & (table["loss"] == h.loss)]
            row: dict[str, Any] = {"Configuration": config.label, "Variant": variant,
                                   "Precision": precision}
            if match.empty:
                rows.append({**row, "n": 0})
                continue
            m = match.iloc[0]
            n = int(m["n"])
            mean, sd = float(m["Test Accuracy"]), float(m["Test Accuracy SD"])
            half = (stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)) if n > 1 else math.nan
            paper_test = config.paper.get("test_accuracy", math.nan)
            rows.append({
                **row, "n": n,
                "Validation Accuracy": float(m["Validation Accuracy"]),
                "Validation Accuracy SD": float(m["Validation Accuracy SD"]),
                "Validation Prediction Time (s)": float(m["Validation Prediction Time (s)"]),
                "Test Accuracy": mean, "Test Accuracy SD": sd,
                # Accuracy is bounded: the t-interval is clipped to [0, 1].
                "Test Accuracy CI95 low": mean - half if math.isnan(half) else max(0.0, mean - half),
                "Test Accuracy CI95 high": mean + half if math.isnan(half) else min(1.0, mean + half),
                "Test Prediction Time (s)": float(m["Test Prediction Time (s)"]),
                "Paper Validation Accuracy": config.paper.get("val_accuracy", math.nan),
                "Paper Test Accuracy": paper_test,
                "Paper Test Prediction Time (s)": config.paper.get("test_prediction_time_s", math.nan),
                "Paper inside CI95": (bool(mean - half <= paper_test <= mean + half)
                                      if n > 1 else None),
            })
    return pd.DataFrame(rows)


def render(table: pd.DataFrame, fmt: str = "markdown") -> str:
    """The reproduced table: ours as mean ± sd (n seeds), the paper's single run beside it."""
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt == "json":
        return table.to_json(orient="records", indent=2)
    from allsearch.readers.tables import markdown

    def pm(mean: float, sd: float) -> str:
        if pd.isna(mean):
            return ""
        return f"{mean:.3f}" if pd.isna(sd) else f"{mean:.3f} ± {sd:.3f}"

    shown = pd.DataFrame({
        "Configuration": table["Configuration"], "Variant": table["Variant"], "n": table["n"],
        "Val Acc (ours)": [pm(a, b) for a, b in zip(table.get("Validation Accuracy", []),
                                                    table.get("Validation Accuracy SD", []), strict=True)],
        "Val Acc (paper)": table.get("Paper Validation Accuracy"),
        "Val Pred Time s (ours)": table.get("Validation Prediction Time (s)").map(lambda v: f"{v:.2f}"),
        "Test Acc (ours)": [pm(a, b) for a, b in zip(table.get("Test Accuracy", []),
                                                     table.get("Test Accuracy SD", []), strict=True)],
        "Test Acc 95% CI": [f"[{lo:.3f}, {hi:.3f}]" if not pd.isna(lo) else ""
                            for lo, hi in zip(table.get("Test Accuracy CI95 low", []),
                                              table.get("Test Accuracy CI95 high", []), strict=True)],
        "Test Acc (paper)": table.get("Paper Test Accuracy"),
        "Paper in CI": table.get("Paper inside CI95").map(
            lambda v: "" if v is None or pd.isna(v) else ("yes" if v else "no")),
        "Test Pred Time s (ours)": table.get("Test Prediction Time (s)").map(lambda v: f"{v:.2f}"),
        "Test Pred Time s (paper)": table.get("Paper Test Prediction Time (s)"),
    })
    return markdown(shown)
