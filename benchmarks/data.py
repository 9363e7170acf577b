"""Data at scale: where do the seconds and the memory of a one-epoch study go, per image?

    python benchmarks/data.py [--quick] [--images 20000] [--source 360x363] [--data PATH]
                              [--workdir DIR] [--features both] [--sizes 5000,20000]
                              [--pixels memory|disk]

Writes a synthetic folder of --images grayscale PNGs of --source pixels (kept in --workdir and
reused by later runs; allsearch.data.synthetic's images, which load_dataset resizes to 100x100)
or takes --data. Then, each in a fresh process, with an empty cache folder:
  cold   load_dataset: hash, decode + resize, cache write, split;
  study  load_dataset again (hash, cache read, split), HOG + PCA(100), one epoch of the
         paper's network (--features both: its conv branch on the pixels beside the HOG/PCA
         branch, float32), evaluation (test prediction, latency).
Per stage: seconds, and resident memory per image over the process's baseline after its
imports: the stage's peak (VmHWM, reset at the stage's start through /proc/self/clear_refs) and
what it leaves held (VmRSS at its end). Stage seconds inside load_dataset come from its
report (DataReport.stage_s) where the pipeline records them.
--sizes: the study at several sizes (subsets of the folder, hard links); the peak's growth per
added image is the memory a larger set costs, without the fixed cost of TensorFlow and the
network. --quick: 1,000 images, one size (under a minute and a half on 2 cores).
--pixels disk: the images stream from the memory-mapped pixel cache file; the pages read from
it are resident too, but they are the system's file cache (dropped under memory pressure), so
each stage also reports its anonymous memory (RssAnon: the process's own), its peak sampled
every 20 ms.
Key figure, last line: the study's peak resident memory per image (KB) over the baseline
(with --pixels disk: its peak anonymous memory per image).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import machine, quiet_env

GOAL_KB = 20


class Probe:
    """Resident memory of this process (Linux /proc/self/status), stage by stage."""

    def __init__(self) -> None:
        now = self.read()
        self.baseline, self.anon_baseline = now["VmRSS"], now["RssAnon"]
        self.stages: dict[str, dict[str, float]] = {}
        self.anon_peak = now["RssAnon"]
        threading.Thread(target=self._sample, daemon=True).start()

    @staticmethod
    def read() -> dict[str, int]:
        values = {}
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon"):
                values[key] = int(rest.split()[0])  # kB
        return values

    def _sample(self) -> None:
        while True:  # the kernel keeps no peak of anonymous memory: sample it
            self.anon_peak = max(self.anon_peak, self.read()["RssAnon"])
            time.sleep(0.02)

    @staticmethod
    def reset_peak() -> bool:
        try:  # "5": the peak RSS back to the current RSS (Linux 4.0+)
            Path("/proc/self/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def stage(self, name: str, work, *args, **kwargs):
        self.reset_peak()
        self.anon_peak = self.read()["RssAnon"]
        started = time.perf_counter()
        result = work(*args, **kwargs)
        self.mark(name, time.perf_counter() - started)
        return result

    def mark(self, name: str, seconds: float) -> None:
        now = self.read()
        self.stages[name] = {"s": seconds, "peak_kb": now["VmHWM"] - self.baseline,
                             "held_kb": now["VmRSS"] - self.baseline,
                             "anon_peak_kb": max(self.anon_peak, now["RssAnon"]) - self.anon_baseline}


def cold_stage(data: str, cache: str, pixels: str) -> dict:
    import sklearn.model_selection  # noqa: F401  (the split imports it: not the data's memory)

    from allsearch.data.dataset import load_dataset

    probe = Probe()
    dataset = probe.stage("cold load", load_dataset, data, cache_dir=cache, pixels=pixels)
    return {"stages": probe.stages, "n": _count(dataset),
            "report_s": getattr(dataset.report, "stage_s", {})}


def study_stage(data: str, cache: str, features: str, pixels: str) -> dict:
    import keras

    from allsearch.core.space import HParams
    from allsearch.data.dataset import load_dataset, pixel_bytes
    from allsearch.data.features import add_hog_pca
    from allsearch.training.trial import run_trial

    probe = Probe()
    dataset = probe.stage("warm load", load_dataset, data, cache_dir=cache, pixels=pixels)
    held = pixel_bytes(dataset)
    dataset = probe.stage("HOG + PCA", add_hog_pca, dataset, cache_dir=cache)

    class FitEnd(keras.callbacks.Callback):
        def on_train_end(self, logs=None) -> None:
            probe.mark("fit", 0.0)
            probe.reset_peak()
            probe.anon_peak = probe.read()["RssAnon"]

    hparams = HParams(epochs=1, features=features)
    result = probe.stage("evaluate", run_trial, dataset, hparams, precision="float32",
                         callbacks=[FitEnd()], keep_model=False)
    probe.stages["fit"]["s"] = result.timings["time_build_s"] + result.timings["time_fit_s"]
    probe.stages["evaluate"]["s"] = result.timings["time_evaluate_s"]
    return {"stages": probe.stages, "n": _count(dataset), "pixel_bytes": held,
            "pixel_dtype": str(dataset.x_train.dtype),
            "report_s": getattr(dataset.report, "stage_s", {}),
            "test_accuracy": result.test_accuracy}


def _count(dataset) -> int:
    return int(len(dataset.y_train) + len(dataset.y_val) + len(dataset.y_test))


def child(args: list[str]) -> dict:
    """One stage in a fresh process (this script with --stage)."""
    done = subprocess.run([sys.executable, __file__, "--stage", *args], env=quiet_env(),
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"stage {args[0]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def synthetic_folder(root: Path, n: int, source: tuple[int, int]) -> Path:
    """n grayscale PNGs of source (height, width) pixels in 4 class folders (written once)."""
    from PIL import Image

    from allsearch.data.synthetic import CLASSES, make_image

    done = root / ".complete"
    if done.is_file():
        return root
    height, width = source
    for i in range(n):
        label = i % len(CLASSES)
        folder = root / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        image = make_image(label, i // len(CLASSES), max(height, width))[:height, :width]
        Image.fromarray(image).save(folder / f"{CLASSES[label]}_{i:06d}.png", compress_level=1)
    done.write_text(str(n))
    return root


def subset(root: Path, target: Path, n: int) -> Path:
    """The first n images of root (class by class in turn), as hard links (copies where the
    file system has none)."""
    if target.is_dir():
        return target
    files = sorted(p for p in root.rglob("*.png"))
    by_class = {}
    for p in files:
        by_class.setdefault(p.parent.name, []).append(p)
    per_class = n // len(by_class)
    for name, members in by_class.items():
        (target / name).mkdir(parents=True, exist_ok=True)
        for p in members[:per_class]:
            try:
                os.link(p, target / name / p.name)
            except OSError:
                shutil.copyfile(p, target / name / p.name)
    return target


def report(label: str, cold: dict, study: dict) -> float:
    n = study["n"]
    rows = [("cold load (hash, decode + resize, cache write, split)", cold["stages"]["cold load"]),
            *((name, study["stages"][name]) for name in ("warm load", "HOG + PCA", "fit", "evaluate"))]
    print(f"\n{label}: {n} images; pixels held as {study['pixel_dtype']}, "
          f"{study['pixel_bytes'] / n / 1024:.1f} KB per image in the dataset's arrays")
    print(f"{'stage':<58}{'seconds':>9}{'peak KB/img':>13}{'held KB/img':>13}"
          f"{'anon peak KB/img':>18}")
    for name, s in rows:
        print(f"{name:<58}{s['s']:>9.2f}{s['peak_kb'] / n:>13.1f}{s['held_kb'] / n:>13.1f}"
              f"{s['anon_peak_kb'] / n:>18.1f}")
    for kind, data in (("cold", cold), ("warm", study)):
        if data["report_s"]:
            print(f"  inside the {kind} load: " + ", ".join(
                f"{k} {v:.2f} s" for k, v in data["report_s"].items()))
    print(f"test accuracy after one epoch: {study['test_accuracy']:.3f}")
    return (max(s["peak_kb"] for _, s in rows[1:]) / n,
            max(s["anon_peak_kb"] for _, s in rows[1:]) / n)


def growth(runs: list) -> None:
    """Memory per added image between the smallest and the largest size, stage by stage: what
    a larger set costs, without the fixed cost of the libraries and the network (which varies
    by some tens of MB from process to process: the smaller the difference in images, the
    less these figures say)."""
    (n1, (_, small)), (n2, (_, large)) = runs[0], runs[-1]
    print(f"growth per added image, {n1} -> {n2} images (KB):")
    for name in large["stages"]:
        a, b = small["stages"][name], large["stages"][name]
        print(f"  {name:<12} peak {(b['peak_kb'] - a['peak_kb']) / (n2 - n1):6.1f}   "
              f"held {(b['held_kb'] - a['held_kb']) / (n2 - n1):6.1f}   "
              f"anon peak {(b['anon_peak_kb'] - a['anon_peak_kb']) / (n2 - n1):6.1f}")
    for key, what in (("peak_kb", "peak"), ("anon_peak_kb", "anonymous peak")):
        top1 = max(v[key] for v in small["stages"].values())
        top2 = max(v[key] for v in large["stages"].values())
        print(f"study {what} growth per added image: {(top2 - top1) / (n2 - n1):.1f} KB "
              f"(goal <= {GOAL_KB} KB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 images, one size")
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--sizes", default=None, help="study sizes, e.g. 5000,20000 "
                        "(default: --images; the full mode adds a quarter of it)")
    parser.add_argument("--source", default="360x363", help="source image HEIGHTxWIDTH")
    parser.add_argument("--data", default=None, help="a dataset folder instead")
    parser.add_argument("--workdir", default=None, help="where the synthetic folders are kept")
    parser.add_argument("--features", default="both", choices=("pixels", "hog_pca", "both"))
    parser.add_argument("--pixels", default="memory", choices=("memory", "disk"),
                        help="where the dataset's pixels stay (allsearch's --pixels)")
    parser.add_argument("--stage", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        kind, *rest = args.stage
        print(json.dumps(cold_stage(*rest) if kind == "cold" else study_stage(*rest)))  # type: ignore[arg-type]
        return
    images = 1_000 if args.quick else args.images
    sizes = ([int(s) for s in args.sizes.split(",")] if args.sizes else
             [images] if args.quick or args.data else [images // 4, images])
    workdir = Path(args.workdir or Path(tempfile.gettempdir()) / "allsearch-data-bench")
    height, width = (int(v) for v in args.source.split("x"))
    started = time.perf_counter()
    full = (Path(args.data) if args.data else
            synthetic_folder(workdir / f"synthetic-{max(sizes)}-{height}x{width}", max(sizes),
                             (height, width)))
    print(f"data: {full} ({time.perf_counter() - started:.0f} s to write or find)", flush=True)
    peaks = {}
    for n in sizes:
        data = full if n == max(sizes) else subset(full, workdir / f"{full.name}-first{n}", n)
        cache = Path(tempfile.mkdtemp(prefix="cache-", dir=workdir))
        cold = child(["cold", str(data), str(cache), args.pixels])
        study = child(["study", str(data), str(cache), args.features, args.pixels])
        shutil.rmtree(cache, ignore_errors=True)
        peaks[study["n"]] = (report(f"{n} requested", cold, study), study)
    print(f"\nmachine: {machine()}")
    if len(peaks) > 1:
        growth(sorted(peaks.items()))
    n, ((per_image, anon), study) = max(peaks.items())
    if args.pixels == "disk":
        print(f"peak anonymous memory per image, one-epoch study of {n} images streamed from "
              f"the cache file: {anon:.1f} KB over the baseline after imports (resident with "
              f"the file's pages: {per_image:.1f} KB; goal <= {GOAL_KB} KB)")
        return
    print(f"peak resident memory per image, one-epoch study of {n} images: {per_image:.1f} KB "
          f"over the baseline after imports (the dataset's pixels "
          f"{study['pixel_bytes'] / n / 1024:.1f} KB of it; goal <= {GOAL_KB} KB)")


if __name__ == "__main__":
    main()
