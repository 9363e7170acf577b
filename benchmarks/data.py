"""How long does the data take: cold (decode every image, compute HOG, fit PCA) vs warm
(pixels and features from the on-disk cache)?

    python benchmarks/data.py [--quick] [--data PATH] [--rounds 3]

Each load runs in a fresh process, so nothing is shared in memory: a cold load gets an empty
cache folder, a warm load the folder the cold one filled. Timed inside the process, from the
call to load_dataset to the HOG/PCA features in hand (imports excluded). --quick: synthetic
images (or --data), one round. Key figure, last line: cold and warm seconds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import machine, median, quiet_env, synthetic_data

LOAD = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
from allsearch.data.dataset import load_dataset
from allsearch.data.features import add_hog_pca
started = time.perf_counter()
dataset = load_dataset(sys.argv[1])
loaded = time.perf_counter()
dataset = add_hog_pca(dataset)
done = time.perf_counter()
print(json.dumps({"images_s": loaded - started, "total_s": done - started,
                  "n": int(len(dataset.y_train) + len(dataset.y_val) + len(dataset.y_test)),
                  "components": int(dataset.features.n_components)}))
"""


def load_once(data: str, cache: Path) -> dict[str, float]:
    env = {**quiet_env(), "ALLSEARCH_CACHE_DIR": str(cache)}
    done = subprocess.run([sys.executable, "-c", LOAD, data], env=env, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"load failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="synthetic data, one round")
    parser.add_argument("--data", default=None, help="dataset folder (default: synthetic)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="allsearch-data-"))
    data = args.data or str(synthetic_data(workdir / "synthetic", per_class=150))
    rounds = 1 if args.quick else args.rounds
    cold: list[dict[str, float]] = []
    warm: list[dict[str, float]] = []
    for i in range(rounds):
        cache = workdir / f"cache-{i}"
        cold.append(load_once(data, cache))
        warm.append(load_once(data, cache))
        print(f"round {i + 1}: cold {cold[-1]['total_s']:.2f} s (images {cold[-1]['images_s']:.2f} s),"
              f" warm {warm[-1]['total_s']:.2f} s (images {warm[-1]['images_s']:.2f} s)")
    print(f"machine: {machine()}")
    print(f"data: {data}; {cold[0]['n']} images, HOG -> PCA({cold[0]['components']})")
    cold_s = median([c["total_s"] for c in cold])
    warm_s = median([w["total_s"] for w in warm])
    print(f"full dataset with HOG/PCA (median of {rounds}): cold {cold_s:.2f} s, "
          f"warm {warm_s:.2f} s ({cold_s / warm_s:.1f}x)")


if __name__ == "__main__":
    main()
