"""The wide study's search, without MLflow, on a machine that cannot install the whole tool.

Why this exists: a GPU machine lent for a few minutes, with no network, has Keras' JAX and
PyTorch backends but no TensorFlow or MLflow. This script runs the same objective as
`python -m allsearch.study` (allsearch.trial.run_trial over a search/*.yaml space: TPE
sampler, median pruner on val_accuracy, the space's baseline as trial 0) into an Optuna
journal file, then re-trains the best configurations over seeds. It needs Keras (any
backend), Optuna and optuna-integration, not TensorFlow or MLflow. Nothing goes to MLflow:
its results pick candidates, and `python -m allsearch.study --space search/best.yaml
--repeats 3` on the tool itself gives the figures that are reported.

    # here (reads the images; writes uint8 pixels + labels + split, a few MB per variant)
    python scripts/offline_search.py pack --data ../shared/data/leukemia/Original \
        --data ../shared/data/leukemia/Segmented --out .devdata
    # there (everything under --out comes back)
    python scripts/offline_search.py run --bundle .devdata/Original.npz \
        --confirm-bundle .devdata/Segmented.npz --space wide --workers 6 \
        --search-s 290 --stop-s 540 --out $OUT
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from allsearch.data import DataReport, Dataset, load_dataset, to_network_input  # noqa: E402
from allsearch.space import HParams, SearchSpace, load_space  # noqa: E402

SPLITS = ("train", "val", "test")


# ----------------------------------------------------------------------------- bundles


def pack(data: str, out_dir: Path) -> Path:
    """One variant's split dataset as uint8 pixels (exact: the network input is pixels/255)."""
    dataset = load_dataset(data)
    arrays: dict[str, Any] = {}
    for split in SPLITS:
        x, y = dataset.split(split)
        pixels = np.rint(x[..., 0] * 255.0).astype(np.uint8)
        assert np.array_equal(to_network_input(pixels), x), "pixels do not round-trip"
        arrays[f"x_{split}"], arrays[f"y_{split}"] = pixels, y
        arrays[f"files_{split}"] = np.array(getattr(dataset, f"files_{split}"), dtype=str)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{dataset.variant}.npz"
    np.savez_compressed(path, class_names=np.array(dataset.class_names, dtype=str),
                        meta=np.array([dataset.fingerprint, dataset.variant,
                                       str(dataset.split_seed)]), **arrays)
    return path


def unpack(path: str | Path) -> Dataset:
    with np.load(path, allow_pickle=False) as z:
        fingerprint, variant, split_seed = (str(v) for v in z["meta"])
        parts: dict[str, Any] = {}
        for split in SPLITS:
            parts[f"x_{split}"] = to_network_input(z[f"x_{split}"])
            parts[f"y_{split}"] = z[f"y_{split}"].astype(np.int64)
            parts[f"files_{split}"] = tuple(str(f) for f in z[f"files_{split}"])
        return Dataset(class_names=tuple(str(c) for c in z["class_names"]),
                       fingerprint=fingerprint, variant=variant, split_seed=int(split_seed),
                       report=DataReport(root=str(path)), **parts)


def with_features(dataset: Dataset, space: SearchSpace, cache_dir: Path) -> Dataset:
    from allsearch.features import add_hog_pca

    return add_hog_pca(dataset, cache_dir=cache_dir) if space.uses_hog_pca() else dataset


# ------------------------------------------------------------------------------ search


def _storage(journal: Path) -> Any:
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return JournalStorage(JournalFileBackend(str(journal)))


def _worker_setup(backend: str, workers: int) -> None:
    os.environ["KERAS_BACKEND"] = backend
    # Several training processes share one GPU: no process may take most of its memory.
    os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{0.9 / max(1, workers):.2f}"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _result_row(result: Any, **extra: Any) -> dict[str, Any]:
    import keras

    return {**extra, "backend": keras.backend.backend(), "hparams": result.hparams.to_dict(),
            "seed": result.seed, "val_accuracy": result.val_accuracy,
            "test_accuracy": result.test_accuracy, "recalls": result.recalls(),
            "epochs_run": result.epochs_run,
            "kept_epoch": result.kept_epoch, "train_time_s": round(result.train_time_s, 2)}


def search_worker(index: int, args: argparse.Namespace, backend: str, deadline: float) -> None:
    _worker_setup(backend, args.workers)
    import optuna
    from optuna_integration import KerasPruningCallback

    from allsearch.trial import run_trial

    space = load_space(args.space)
    dataset = with_features(unpack(args.bundle), space, args.cache)
    study = optuna.load_study(study_name=args.study_name, storage=_storage(args.out / "search.journal"),
                              sampler=optuna.samplers.TPESampler(seed=args.seed + index),
                              pruner=optuna.pruners.MedianPruner(n_startup_trials=5,
                                                                 n_warmup_steps=2))
    log = open(args.out / "search.jsonl", "a", buffering=1)

    def objective(trial: optuna.Trial) -> float:
        hparams = space.sample(trial)
        started = time.time()
        result = run_trial(dataset, hparams, seed=args.seed, precision="bfloat16",
                           callbacks=[KerasPruningCallback(trial, "val_accuracy")],
                           keep_model=False)
        trial.set_user_attr("test_accuracy", result.test_accuracy)
        trial.set_user_attr("recalls", result.recalls())
        trial.set_user_attr("kept_epoch", result.kept_epoch)
        log.write(json.dumps(_result_row(result, trial=trial.number, worker=index,
                                         wall_s=round(time.time() - started, 1))) + "\n")
        return result.val_accuracy

    while time.time() < deadline:
        study.optimize(objective, n_trials=1, catch=(Exception,))


def confirm_worker(index: int, args: argparse.Namespace, backend: str, jobs: Any,
                   deadline: float) -> None:
    _worker_setup(backend, args.workers)
    from allsearch.trial import run_trial

    space = load_space(args.space)
    datasets = {str(b): with_features(unpack(b), space, args.cache)
                for b in [args.bundle, *args.confirm_bundle]}
    log = open(args.out / "confirm.jsonl", "a", buffering=1)
    while time.time() < deadline:
        try:
            job = jobs.get_nowait()
        except queue.Empty:
            return
        hparams = HParams.from_dict(job["hparams"])
        started = time.time()
        try:
            result = run_trial(datasets[job["bundle"]], hparams, seed=job["seed"],
                               precision="bfloat16", keep_model=False)
        except Exception as exc:  # one bad configuration must not stop the others
            log.write(json.dumps({**job, "error": f"{type(exc).__name__}: {exc}"[:500]}) + "\n")
            continue
        log.write(json.dumps(_result_row(result, variant=datasets[job["bundle"]].variant,
                                         role=job["role"], worker=index,
                                         wall_s=round(time.time() - started, 1))) + "\n")


def confirm_jobs(study: Any, args: argparse.Namespace, space: SearchSpace) -> list[dict[str, Any]]:
    """Top-k configurations by validation accuracy, then the best of each feature mode, each
    over --seeds seeds: on the search's variant first, then on the others."""
    from optuna.trial import TrialState

    done = sorted((t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE),
                  key=lambda t: -t.value)
    picks: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()

    def add(role: str, trial: Any) -> None:
        hp = space.hparams(trial.params).to_dict()
        key = json.dumps(hp, sort_keys=True)
        if key not in seen:
            seen.add(key)
            picks.append((role, hp))

    for trial in done[:args.top]:
        add(f"top{trial.number}", trial)
    for mode in ("pixels", "hog_pca", "both"):
        best = next((t for t in done if space.hparams(t.params).features == mode), None)
        if best is not None:
            add(f"best-{mode}-{best.number}", best)
    jobs = []
    for bundle in [args.bundle, *args.confirm_bundle]:
        for role, hp in picks:
            jobs += [{"bundle": str(bundle), "role": role, "hparams": hp, "seed": s}
                     for s in range(args.seeds)]
    return jobs


def pick_backend(preferred: list[str]) -> str:
    """The first Keras backend that trains a tiny model on this machine's accelerator."""
    import subprocess

    probe = ("import keras, numpy as np; m = keras.Sequential([keras.Input((4,)), "
             "keras.layers.Dense(2, activation='softmax')]); m.compile('adam', "
             "'categorical_crossentropy'); m.fit(np.ones((8, 4)), np.eye(2)[[0, 1] * 4], "
             "verbose=0); import sys; print(keras.backend.backend(), file=sys.stderr)")
    for backend in preferred:
        env = {**os.environ, "KERAS_BACKEND": backend, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
        done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                              text=True, timeout=120)
        print(f"backend {backend}: {'ok' if done.returncode == 0 else 'FAILED'}", flush=True)
        if done.returncode == 0:
            return backend
        print(done.stderr[-1500:], flush=True)
    raise SystemExit("no Keras backend works here")


def _stop(procs: list[Any], phase: str) -> None:
    """End the workers still running at their deadline; a worker that died is an error."""
    for p in procs:
        if p.is_alive():
            p.terminate()
            p.join()
        elif p.exitcode != 0:
            raise SystemExit(f"a {phase} worker exited with code {p.exitcode} (see its "
                             f"traceback above)")


def run(args: argparse.Namespace) -> None:
    import optuna

    started = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    backend = pick_backend(args.backends)
    space = load_space(args.space)
    # Features once, in this process, so the workers read them from the cache.
    for bundle in [args.bundle, *args.confirm_bundle]:
        with_features(unpack(bundle), space, args.cache)
    print(f"data ready at {time.time() - started:.0f} s", flush=True)
    study = optuna.create_study(study_name=args.study_name, direction="maximize",
                                storage=_storage(args.out / "search.journal"), load_if_exists=True)
    study.set_user_attr("space", str(args.space))
    if not study.trials and space.baseline_params():
        study.enqueue_trial(space.baseline_params())  # the paper's network is trial 0

    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=search_worker, args=(i, args, backend, started + args.search_s))
             for i in range(args.workers)]
    for p in procs:
        p.start()
    for p in procs:  # a trial still running this long after the search ended is dropped
        p.join(timeout=max(1.0, started + args.search_s + args.grace_s - time.time()))
    _stop(procs, "search")
    states = [t.state.name for t in study.trials]
    print(f"search done at {time.time() - started:.0f} s: "
          f"{ {s: states.count(s) for s in set(states)} }", flush=True)

    jobs = confirm_jobs(study, args, space)
    queue = ctx.Queue()
    for job in jobs:
        queue.put(job)
    print(f"confirming {len(jobs)} runs", flush=True)
    procs = [ctx.Process(target=confirm_worker,
                         args=(i, args, backend, queue, started + args.stop_s - 45))
             for i in range(args.workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=max(1.0, started + args.stop_s - time.time()))
    _stop(procs, "confirm")
    print(f"finished at {time.time() - started:.0f} s", flush=True)


def best(confirm_files: list[Path], variant: str, out: Path, min_runs: int,
         features: str | None = None) -> str:
    """Write the configuration with the highest mean validation accuracy over its re-runs on
    `variant` (of one feature mode, if given) as a space that samples nothing; returns a
    one-line summary."""
    from allsearch.space import fixed_space_text

    runs: dict[str, list[dict[str, Any]]] = {}
    for path in confirm_files:
        for line in Path(path).read_text().splitlines():
            row = json.loads(line)
            if "error" not in row and row["variant"] == variant and (
                    features is None or row["hparams"]["features"] == features):
                runs.setdefault(json.dumps(row["hparams"], sort_keys=True), []).append(row)
    scored = sorted(((float(np.mean([r["val_accuracy"] for r in rows])), key, rows)
                     for key, rows in runs.items() if len(rows) >= min_runs), reverse=True)
    if not scored:
        raise SystemExit(f"no configuration{f' with features={features}' if features else ''} "
                         f"has {min_runs} re-runs on {variant}")
    val, key, rows = scored[0]
    tests = [r["test_accuracy"] for r in rows]
    summary = (f"{len(rows)} re-runs on {variant}: val {val:.3f}, test {np.mean(tests):.3f} "
               f"+- {np.std(tests, ddof=1):.3f} (offline search)")
    hparams = HParams.from_dict(json.loads(key))
    out.write_text(fixed_space_text(
        hparams, name=out.stem,
        description=f"The best configuration{f' with features={features}' if features else ''} "
                    f"of the wide search on {variant}.",
        comments=("Written by scripts/offline_search.py best: the configuration with the highest",
                  f"mean validation accuracy over its re-runs ({summary}).",
                  "Measure it with the tool (figures in the README):",
                  f"  python -m allsearch.study --space {out.stem} --trials 1 --repeats 3 --data ...")),
        encoding="utf-8")
    return summary


ENGINE = "optuna-offline"
# Journal trial states -> allsearch's; a trial still RUNNING in the journal was cut off.
_STATES = {"COMPLETE": "COMPLETE", "PRUNED": "PRUNED", "FAIL": "FAIL", "RUNNING": "KILLED"}


def import_to_mlflow(journal: Path, search_rows: Path, bundle: Path, *, study_name: str,
                     experiment: str | None = None, tracking_uri: str | None = None) -> str:
    """Every trial of an offline search as a child run under one parent run, as
    `python -m allsearch.study` would have logged it (params, per-epoch val_accuracy, final
    metrics, state), so the leaderboard and the MLflow UI show it. Trials already imported
    are skipped. What the offline run did not record (curves other than val_accuracy,
    prediction times, plots, models) stays absent."""
    from allsearch.tracking import Tracker, package_versions, runs_of_parent

    dataset = unpack(bundle)
    study = optuna_study(journal, study_name)
    rows = {r["trial"]: r for r in map(json.loads, Path(search_rows).read_text().splitlines())}
    tracker = Tracker(experiment or study_name, tracking_uri=tracking_uri)
    base = {"engine": ENGINE, "variant": dataset.variant, "data_fingerprint": dataset.fingerprint,
            "split_seed": dataset.split_seed, "n_train": len(dataset.y_train),
            "class_names": list(dataset.class_names)}
    parent_id = tracker.find_parent(study_name) or tracker.start_parent(study_name, {
        **base, "study_name": study_name, "imported_from": str(journal),
        "versions_here": package_versions()})
    done = set(runs_of_parent(parent_id, tracking_uri=tracker.tracking_uri).get(
        "params.trial_number", []))
    imported = 0
    for trial in study.get_trials(deepcopy=False):
        if str(trial.number) in done or trial.state.name not in _STATES:
            continue
        row = rows.get(trial.number, {})
        hparams = HParams.from_dict(row["hparams"]) if row else _hparams_of(trial, study)
        run = tracker.start_trial(parent_id=parent_id, name=f"trial-{trial.number:04d}",
                                  params={**hparams.to_dict(), **base, "seed": row.get("seed", 0),
                                          "trial_number": trial.number},
                                  tags={"trial_number": trial.number, "engine": ENGINE})
        for step, value in sorted(trial.intermediate_values.items()):
            tracker.log_metrics(run.run_id, {"val_accuracy": value}, step=step)
        if row and trial.state.name == "COMPLETE":
            tracker.log_metrics(run.run_id, {
                "val_accuracy": row["val_accuracy"], "test_accuracy": row["test_accuracy"],
                "epochs_run": row["epochs_run"], "kept_epoch": row["kept_epoch"],
                "train_time_s": row["train_time_s"], **row["recalls"]},
                step=max(0, row["epochs_run"] - 1))
        elif trial.state.name == "PRUNED":
            tracker.log_metrics(run.run_id, {"epochs_run": len(trial.intermediate_values)})
        run.end(_STATES[trial.state.name])
        imported += 1
    tracker.end_run(parent_id)
    return f"{imported} trial(s) imported into study '{study_name}' ({tracker.tracking_uri})"


def optuna_study(journal: Path, study_name: str) -> Any:
    import optuna

    return optuna.load_study(study_name=study_name, storage=_storage(journal))


def _hparams_of(trial: Any, study: Any) -> HParams:
    # A trial without a result row: its sampled values over the space's fixed ones.
    space = load_space(study.user_attrs.get("space", "wide"))
    return space.hparams(trial.params)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="write split datasets as .npz bundles")
    p.add_argument("--data", action="append", required=True)
    p.add_argument("--out", type=Path, default=Path(".devdata"))
    r = sub.add_parser("run", help="search, then re-train the best over seeds")
    r.add_argument("--bundle", type=Path, required=True, help="the variant searched on")
    r.add_argument("--confirm-bundle", type=Path, action="append", default=[],
                   help="other variants the chosen configurations are re-trained on")
    r.add_argument("--space", default="wide")
    r.add_argument("--study-name", default="wide-offline")
    r.add_argument("--workers", type=int, default=6)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--seeds", type=int, default=3, help="seeds per confirmed configuration")
    r.add_argument("--top", type=int, default=3)
    r.add_argument("--search-s", type=float, default=290, help="start no trial after this")
    r.add_argument("--grace-s", type=float, default=45,
                   help="how long trials running at --search-s may go on")
    r.add_argument("--stop-s", type=float, default=540, help="everything ends by this")
    r.add_argument("--backends", nargs="+", default=["jax", "torch"])
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--cache", type=Path, default=Path("/tmp/allsearch-offline-cache"),
                   help="where the HOG/PCA features are cached (kept out of --out)")
    b = sub.add_parser("best", help="write the best re-run configuration as a fixed space")
    b.add_argument("--confirm", type=Path, action="append", required=True,
                   help="confirm.jsonl files of earlier runs")
    b.add_argument("--variant", default="Original")
    b.add_argument("--min-runs", type=int, default=3)
    b.add_argument("--features", choices=["pixels", "hog_pca", "both"],
                   help="only configurations of this feature mode")
    b.add_argument("--out", type=Path, default=Path("search/best.yaml"))
    m = sub.add_parser("import", help="log an offline search's trials to MLflow")
    m.add_argument("--journal", type=Path, required=True)
    m.add_argument("--rows", type=Path, required=True, help="its search.jsonl")
    m.add_argument("--bundle", type=Path, required=True, help="the bundle it searched on")
    m.add_argument("--study-name", default="wide-offline")
    m.add_argument("--tracking-uri", default=None)
    args = parser.parse_args(argv)
    if args.command == "import":
        print(import_to_mlflow(args.journal, args.rows, args.bundle, study_name=args.study_name,
                               tracking_uri=args.tracking_uri))
    elif args.command == "best":
        print(best(args.confirm, args.variant, args.out, args.min_runs, args.features))
    elif args.command == "pack":
        for data in args.data:
            print(pack(data, args.out))
    else:
        run(args)


if __name__ == "__main__":
    main()
