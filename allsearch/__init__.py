"""allsearch: hyperparameter search for small medical-imaging CNNs, tracked in MLflow.

The library is usable without the command line:

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

__version__ = "0.1.0"
__all__ = ["__version__"]
