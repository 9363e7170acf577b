"""scripts/offline_search.py: bundles that round-trip, the pick of search/best.yaml, and an
end-to-end run (search, then re-runs over seeds) on the TensorFlow backend."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from allsearch.data import load_dataset
from allsearch.space import HParams, load_space

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "offline_search.py"


@pytest.fixture(scope="module")
def offline():
    spec = importlib.util.spec_from_file_location("offline_search", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    # Spawned workers import it by this name, from the parent's sys.path.
    sys.modules["offline_search"] = module
    sys.path.insert(0, str(SCRIPT.parent))
    spec.loader.exec_module(module)
    return module


def test_a_bundle_holds_the_same_split_as_the_dataset(offline, tiny_data: Path, tmp_path: Path) -> None:
    dataset = load_dataset(tiny_data)
    bundle = offline.pack(str(tiny_data), tmp_path / "bundles")
    back = offline.unpack(bundle)
    assert bundle.name == "tiny.npz"
    for split in ("train", "val", "test"):
        assert np.array_equal(getattr(back, f"x_{split}"), getattr(dataset, f"x_{split}"))
        assert np.array_equal(getattr(back, f"y_{split}"), getattr(dataset, f"y_{split}"))
        assert getattr(back, f"files_{split}") == getattr(dataset, f"files_{split}")
    assert (back.class_names, back.fingerprint, back.split_seed) == (
        dataset.class_names, dataset.fingerprint, dataset.split_seed)


def _row(hparams: HParams, variant: str, val: float, seed: int) -> str:
    return json.dumps({"variant": variant, "role": "top", "hparams": hparams.to_dict(),
                       "seed": seed, "val_accuracy": val, "test_accuracy": val - 0.01})


def test_best_is_the_highest_mean_validation_accuracy_with_enough_re_runs(
        offline, tmp_path: Path) -> None:
    steady, lucky, elsewhere = HParams(dropout=0.3), HParams(dropout=0.1), HParams(dropout=0.2)
    lines = [_row(steady, "Original", v, s) for s, v in enumerate((0.90, 0.92, 0.91))]
    lines += [_row(lucky, "Original", v, s) for s, v in enumerate((0.99, 0.98))]  # 2 runs only
    lines += [_row(elsewhere, "Segmented", 0.99, s) for s in range(3)]  # another variant
    lines.append(json.dumps({"variant": "Original", "hparams": lucky.to_dict(), "error": "x"}))
    confirm = tmp_path / "confirm.jsonl"
    confirm.write_text("\n".join(lines) + "\n")
    out = tmp_path / "best.yaml"
    summary = offline.best([confirm], "Original", out, min_runs=3)
    assert summary.startswith("3 re-runs on Original: val 0.910, test 0.900 +- 0.010")
    space = load_space(out)
    assert space.params == () and space.hparams({}) == steady
    with pytest.raises(SystemExit, match="no configuration has 4 re-runs on Original"):
        offline.best([confirm], "Original", out, min_runs=4)
    with pytest.raises(SystemExit, match="no configuration with features=both has 3 re-runs"):
        offline.best([confirm], "Original", out, min_runs=3, features="both")
    offline.best([confirm], "Original", out, min_runs=2, features="pixels")
    assert load_space(out).hparams({}) == lucky


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_run_searches_then_re_runs_the_best_over_seeds(offline, tiny_data: Path,
                                                       tmp_path: Path) -> None:
    bundle = offline.pack(str(tiny_data), tmp_path / "bundles")
    space = tmp_path / "tiny.yaml"
    space.write_text("name: tiny\nparams:\n  features: {type: categorical, choices: [pixels, both]}\n"
                     "fixed: {epochs: 1, batch_size: 8, conv_layers: 2, pooling: gap}\n"
                     "baseline: {features: both}\n")
    out = tmp_path / "out"
    offline.main(["run", "--bundle", str(bundle), "--confirm-bundle", str(bundle),
                  "--space", str(space), "--workers", "1", "--seeds", "2", "--top", "1",
                  "--search-s", "45", "--grace-s", "120", "--stop-s", "400",
                  "--backends", "tensorflow", "--out", str(out), "--cache", str(tmp_path / "c")])
    searched = [json.loads(line) for line in (out / "search.jsonl").read_text().splitlines()]
    assert searched[0]["trial"] == 0 and searched[0]["hparams"]["features"] == "both"  # baseline
    confirmed = [json.loads(line) for line in (out / "confirm.jsonl").read_text().splitlines()]
    assert not [r for r in confirmed if "error" in r]
    # The best trial and the best of each feature mode, two seeds each, on the bundle given
    # twice (as the searched and as a confirming variant): every configuration 4 times.
    configs = {json.dumps(r["hparams"], sort_keys=True) for r in confirmed}
    assert len(confirmed) == 4 * len(configs)
    assert sorted({r["seed"] for r in confirmed}) == [0, 1]

    # Imported into MLflow, the search is a study the leaderboard reads like any other.
    from allsearch import leaderboard

    journal = out / "search.journal"
    message = offline.import_to_mlflow(journal, out / "search.jsonl", bundle, study_name="wide-offline")
    n_trials = len(offline.optuna_study(journal, "wide-offline").trials)
    assert message.startswith(f"{n_trials} trial(s) imported into study 'wide-offline'")
    name, table = leaderboard.load_study_runs("wide-offline")
    assert len(table) == n_trials and set(table["params.engine"]) == {"optuna-offline"}
    complete = table[table["tags.state"] == "COMPLETE"]
    assert set(complete["metrics.test_accuracy"].round(6)) <= {round(r["test_accuracy"], 6) for r in searched}
    assert offline.import_to_mlflow(journal, out / "search.jsonl", bundle,
                                    study_name="wide-offline").startswith("0 trial(s)")
