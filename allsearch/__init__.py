"""allsearch: hyperparameter search for small medical-imaging CNNs, tracked in MLflow.

The public API is one call with the command's settings as keywords (docs/design.md, "Public
API"):

    import allsearch

    result = allsearch.run_study(trials=20, space="best", data="data/leukemia/Segmented")
    print(result.best_trial_number, result.best_metrics["test_accuracy"], result.champion_model_uri)

The pieces are usable on their own too:

    from allsearch.data import load_dataset
    from allsearch.space import HParams
    from allsearch.trial import run_trial

    dataset = load_dataset("data/leukemia/Segmented")
    result = run_trial(dataset, HParams(epochs=15, batch_size=64), seed=0)
"""

import os

# TensorFlow prints pages of C++ start-up logs a user cannot act on; keep errors only,
# unless the user asked for more.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# First, so that its exit handler runs after every library's (allsearch/exiting.py).
from allsearch import exiting  # noqa: E402, F401

__version__ = "0.1.0"
__all__ = ["__version__", "run_study", "StudyResult"]

# The public API is imported on first use: `import allsearch` stays cheap (no TensorFlow,
# MLflow or Optuna) and sets nothing up in the caller's process.
_LAZY = {"run_study": "allsearch.study", "StudyResult": "allsearch.study"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        value = globals()[name] = getattr(importlib.import_module(_LAZY[name]), name)
        return value
    raise AttributeError(f"module 'allsearch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
