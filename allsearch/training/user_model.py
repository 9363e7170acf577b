"""A network of your own (--model MODULE:FUNCTION, or a function given to run_study): found,
checked once on the data before a study exists, and built for every trial.

The contract (docs/guide.md, "A network of your own"): FUNCTION(params, input_shape,
n_classes) returns a keras.Model. `params` is every hyperparameter and knob of the trial
(HParams.to_dict(): sampled, fixed, defaults), `input_shape` the images' (H, W, C), e.g.
(64, 64, 3), and `n_classes` the data's classes; the network ends in n_classes probabilities.
An uncompiled network is compiled as the paper's is (allsearch.training.model.compile_model: Adam at
`learning_rate`, the `loss`, categorical accuracy); a compiled one is trained as it is, and
must report `accuracy`. Labels are one-hot.

MODULE is imported from the current folder or PYTHONPATH: the folder is on sys.path only while
the import runs, so calling allsearch leaves the caller's sys.path as it found it. Keras is
imported where a network is checked or built, never by importing this module.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import pickle
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from allsearch.core.config import factory_name
from allsearch.core.contract import BUILT_IN_MODEL
from allsearch.core.errors import ConfigError, ModelError, first_line
from allsearch.core.hparams import HParams

if TYPE_CHECKING:
    import keras

    from allsearch.core.space import SearchSpace
    from allsearch.data.dataset import Dataset

__all__ = ["Factory", "PAPER", "load", "check_workers", "check", "build", "summary_text"]

SHOWN = 200  # characters of a user's error message in the one line that says it


@dataclass(frozen=True)
class Factory:
    """Which network a study trains: its name as runs log it (model_factory), and the function
    (None: the paper's CNN family, allsearch.training.model.build_cnn)."""

    name: str
    function: Callable[..., Any] | None = None

    @property
    def built_in(self) -> bool:
        return self.function is None


PAPER = Factory(BUILT_IN_MODEL)


def load(model: str | Callable[..., Any] | None) -> Factory:
    """The factory `model` names (MODULE:FUNCTION), or is; None is the paper's. A module that
    is not found, or has no such function, is a ConfigError of one line."""
    if model is None or model == BUILT_IN_MODEL:
        return PAPER
    if callable(model):
        return Factory(factory_name(model), model)
    module_name, _, path = model.partition(":")
    module = _import(model, module_name)
    function: Any = module
    for part in path.split("."):
        if not hasattr(function, part):
            found = sorted(n for n, v in vars(module).items()
                           if callable(v) and not n.startswith("_")
                           and getattr(v, "__module__", None) == module.__name__)
            raise ConfigError(f"--model {model}: module '{module_name}' "
                              f"({getattr(module, '__file__', '?')}) has no function '{path}'; "
                              f"its functions: {', '.join(found) or 'none'}")
        function = getattr(function, part)
    if not callable(function):
        raise ConfigError(f"--model {model}: '{path}' in module '{module_name}' is a "
                          f"{type(function).__name__}, not a function")
    return Factory(model, function)


def _import(model: str, module_name: str) -> Any:
    from allsearch.core.hardware import start_tensorflow

    try:
        with _current_folder_importable():
            try:
                found = importlib.util.find_spec(module_name)
            except ModuleNotFoundError:  # a package on its way is missing
                found = None
            if found is None:
                raise ConfigError(f"--model {model}: no module '{module_name}' in the current "
                                  f"folder ({os.getcwd()}) or on PYTHONPATH; run from the folder "
                                  f"that holds it (e.g. examples/resnet.py for examples.resnet), "
                                  f"or add that folder to PYTHONPATH")
            start_tensorflow()  # quietly, before the module imports Keras
            return importlib.import_module(module_name)
    except ConfigError:
        raise
    except ModuleNotFoundError as exc:  # something the module imports
        raise ConfigError(f"--model {model}: importing '{module_name}' failed: "
                          f"{first_line(exc)[:SHOWN]}; install what it needs") from None
    except Exception as exc:  # noqa: BLE001  (the user's module: a SyntaxError, anything it raises)
        raise ConfigError(f"--model {model}: importing '{module_name}' raised "
                          f"{type(exc).__name__}: {first_line(exc)[:SHOWN]}; fix the module") from exc


@contextlib.contextmanager
def _current_folder_importable() -> Iterator[None]:
    """The current folder on sys.path while a module is imported, then as it was (python -m
    puts it there itself; the `allsearch` command and a notebook's kernel may not)."""
    here = os.getcwd()
    added = here not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, here)
    importlib.invalidate_caches()  # a module written since this process started is found
    try:
        yield
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(here)


def check_workers(factory: Factory, workers: int) -> None:
    """A function given as itself reaches worker processes by reference (its module and name):
    refuse one that cannot (defined inside a function, or in a notebook), before any study."""
    if factory.built_in or workers == 1:
        return
    try:
        pickle.dumps(factory.function)
    except Exception:  # noqa: BLE001  (pickle raises several types for this)
        raise ConfigError(f"model={factory.name}: worker processes cannot import this function "
                          f"(--workers {workers}); define it at the top level of a module and "
                          f"pass 'MODULE:FUNCTION', or run with workers=1") from None


def check(factory: Factory, space: SearchSpace, dataset: Dataset) -> None:
    """Build the network once, on the space's baseline (else each parameter's first value),
    and run it on two training images: a function that raises, returns no keras.Model, or a
    network that cannot take the images or does not give n_classes probabilities is a
    ModelError of one line, before any study or store exists."""
    if factory.built_in:
        return
    values = {p.name: (p.choices[0] if p.type == "categorical" else
                       float(p.bounds[0]) if p.type == "float" else p.bounds[0]) for p in space.params}
    hparams = space.hparams({**values, **(space.baseline_params() or {})})
    from allsearch.core.hardware import start_tensorflow

    start_tensorflow()  # quietly (a function given to run_study imported no Keras here yet)
    import keras

    from allsearch.data.images import as_network_input

    shape, n_classes = dataset.image_shape, dataset.n_classes
    try:
        model = build(factory, hparams, shape, n_classes)
        x = as_network_input(dataset.x_train[:2])  # the uint8 pixels as the network takes them
        y = keras.utils.to_categorical(dataset.y_train[:2], n_classes)
        try:
            probabilities = model.predict(x, verbose=0)
            got = getattr(probabilities, "shape", None)
            if got is not None and tuple(got) != (len(x), n_classes):
                _check_units(factory, got[-1] if len(got) == 2 else got, n_classes)
            result = model.evaluate(x, y, verbose=0, return_dict=True)
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001  (Keras raises many types for a wrong shape)
            raise ModelError(f"--model {factory.name}: its network cannot be trained on the "
                             f"images, shape {shape}, with one-hot labels of {n_classes} "
                             f"classes ({type(exc).__name__}: {first_line(exc)[:SHOWN]})") from exc
        if "accuracy" not in result:
            raise ModelError(f"--model {factory.name}: the compiled network reports "
                             f"{sorted(result)}, not 'accuracy'; compile it with "
                             f"metrics=['accuracy'], or return it uncompiled")
    finally:
        keras.backend.clear_session()  # trial 0 starts on a fresh session


def build(factory: Factory, hparams: HParams, input_shape: Sequence[int], n_classes: int
          ) -> keras.Model:
    """The factory's network for these hyperparameters, compiled (by allsearch.training.model's rule
    where the function left it uncompiled); a ModelError says what is wrong with it."""
    import keras

    from allsearch.training.model import compile_model

    assert factory.function is not None, "the paper's network is allsearch.training.model.build_cnn"
    params = hparams.to_dict()
    try:
        model = factory.function(dict(params), tuple(int(d) for d in input_shape), int(n_classes))
    except Exception as exc:  # noqa: BLE001  (whatever the user's function raises)
        shown = ", ".join(f"{k}={v}" for k, v in hparams.knobs) or f"learning_rate={hparams.learning_rate}"
        raise ModelError(f"--model {factory.name} raised {type(exc).__name__}: "
                         f"{first_line(exc)[:SHOWN]} (params {shown}, input_shape "
                         f"{tuple(input_shape)}, n_classes {n_classes})") from exc
    if not isinstance(model, keras.Model):
        raise ModelError(f"--model {factory.name} returned a {type(model).__name__}, not a "
                         f"keras.Model; return the network (keras.Model, keras.Sequential)")
    units = _output_units(model, input_shape)
    if units is not None:
        _check_units(factory, units, n_classes)
    if not model.compiled:
        compile_model(model, hparams)
    return model


def _output_units(model: keras.Model, input_shape: Sequence[int]) -> Any:
    """The last dimension of the network's output (a tuple of shapes for several outputs);
    None where Keras cannot tell without running it (check() runs it)."""
    import keras

    batch = (None, *input_shape)
    try:
        shape = model.compute_output_shape(batch)
    except Exception:  # noqa: BLE001  (a subclassed model without compute_output_shape)
        try:
            shape = model.compute_output_spec(keras.KerasTensor(batch)).shape
        except Exception:  # noqa: BLE001
            return None
    if isinstance(shape, (list, dict)) or (shape and isinstance(shape[0], (tuple, list))):
        return tuple(shape.values()) if isinstance(shape, dict) else tuple(shape)
    return shape[-1]


def _check_units(factory: Factory, units: Any, n_classes: int) -> None:
    if isinstance(units, tuple):
        raise ModelError(f"--model {factory.name}: its network has {len(units)} outputs; "
                         f"allsearch trains one, the n_classes probabilities")
    if units != n_classes:
        raise ModelError(f"--model {factory.name}: its network's output has {units} units, but "
                         f"the data has {n_classes} classes; end it with Dense(n_classes, "
                         f"activation='softmax') (n_classes is the function's third argument)")


def summary_text(model: keras.Model) -> str:
    """Keras' summary of a network (its layers, shapes and weights), as text."""
    lines: list[str] = []
    model.summary(print_fn=lambda text, *args, **kwargs: lines.append(str(text)))
    return "\n".join(lines).rstrip() + "\n"
