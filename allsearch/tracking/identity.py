"""What a trial run is: its params (hyperparameters and knobs, precision, network) and the key
of the duplicate rule (docs/design.md, "One duplicate rule"), shared by every engine."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from allsearch.core.contract import CONFIG_KEY, MODEL_FACTORY, STATE, FoundRun, Store
from allsearch.core.hparams import HParams
from allsearch.data.dataset import Dataset
from allsearch.training.user_model import PAPER, Factory

__all__ = ["config_key", "find_duplicate", "trial_params"]


# Hyperparameters added after runs were keyed, with the default those runs trained with:
# left out of the key at that default, so an earlier study's runs stay duplicates to reuse.
ADDED_LATER: dict[str, object] = {"bn_after_pool": False}


def config_key(hparams: HParams, *, seeds: Sequence[int], dataset: Dataset, precision: str,
               cv: int = 0, factory: Factory = PAPER) -> str:
    """What makes two runs the same computation: the network (its factory), the
    hyperparameters, the training seeds, the data and split (with the images' size and
    colour) and folds (--cv), the precision. Training is deterministic on a CPU for these, so a second run of
    the same key would only repeat the first one's numbers (the duplicate rule). The paper's
    network keeps the keys it always had."""
    described = hparams.to_dict()
    for name, default in ADDED_LATER.items():  # at its default, a run before it had the key
        if described.get(name) == default:
            del described[name]
    values = {"hparams": described, "seeds": list(seeds), "data": dataset.fingerprint,
              "precision": precision, **({"cv": cv} if cv else {})}
    if not factory.built_in:
        values["model"] = factory.name
    text = json.dumps(values, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def trial_params(hparams: HParams, *, precision: str, factory: Factory,
                 params: dict[str, Any]) -> dict[str, Any]:
    """A trial run's params: its hyperparameters and knobs, precision, network, and `params`."""
    return {**hparams.params(), "precision": precision, MODEL_FACTORY: factory.name, **params}


def find_duplicate(store: Store, parent_id: str, key: str) -> FoundRun | None:
    """A complete run of the same computation under this parent: (id, metrics, tags)."""
    return store.find_run(parent_id, {CONFIG_KEY: key, STATE: "COMPLETE"})
