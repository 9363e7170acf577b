"""allsearch: hyperparameter search for small medical-imaging CNNs, tracked in MLflow.

The public API is one call with the command's settings as keywords (docs/design.md, "Public
API"):

    import allsearch

    result = allsearch.run_study(trials=20, space="best", data="data/leukemia/Segmented")
    print(result.best_trial_number, result.best_metrics["test_accuracy"], result.champion_model_uri)

The pieces are usable on their own too:

    from allsearch.data.dataset import load_dataset
    from allsearch.core.space import HParams
    from allsearch.training.trial import run_trial

    dataset = load_dataset("data/leukemia/Segmented")
    result = run_trial(dataset, HParams(epochs=15, batch_size=64), seed=0)
"""

# Importing allsearch sets nothing in the caller's process (tests/test_side_effects.py):
# TensorFlow's start-up logs are quieted where it starts (hardware.start_tensorflow).

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
