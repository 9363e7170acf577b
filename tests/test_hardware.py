"""Precision selection ('auto' follows the CPU's native bf16, and the choice is recorded),
threads, and the interrupt rule while a model trains."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from allsearch.core import hardware
from allsearch.core.errors import ConfigError


def test_auto_is_bf16_only_with_native_support(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "bf16_support", lambda: "avx512_bf16")
    assert hardware.resolve_precision("auto") == ("bfloat16", "auto: the CPU has avx512_bf16")
    monkeypatch.setattr(hardware, "bf16_support", lambda: "")
    assert hardware.resolve_precision("auto")[0] == "float32"
    assert hardware.resolve_precision("bfloat16") == ("bfloat16", "asked for")
    with pytest.raises(ConfigError, match="--precision must be one of"):
        hardware.resolve_precision("fp16")


def test_bf16_support_reads_cpu_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 amx_bf16\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: real_open(
        cpuinfo if path == "/proc/cpuinfo" else path, *a, **k))
    assert hardware.bf16_support() == "amx_bf16 avx512_bf16"
    cpuinfo.write_text("flags\t\t: fpu sse2 avx2\n")
    assert hardware.bf16_support() == ""


@pytest.mark.train
def test_study_records_the_resolved_precision(tiny_data: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    from allsearch import study
    from allsearch.tracking.tracking import Tracker

    monkeypatch.setattr(hardware, "bf16_support", lambda: "")
    done = study.run(trials=1, space="smoke", data=str(tiny_data), study_name="precision",
                     pruner="none", log_models="none", progress=False)
    tracker = Tracker("precision")
    parent = tracker.client.get_run(done.user_attrs["mlflow_parent_run_id"])
    assert parent.data.params["precision"] == "float32"
    assert parent.data.params["precision_reason"] == "auto: the CPU has no native bf16"
    child = tracker.client.get_run(done.trials[0].user_attrs["mlflow_run_id"])
    assert child.data.params["precision"] == "float32"


@pytest.mark.parametrize("env, expected", [({"ALLSEARCH_THREADS": "1"}, 1), ({}, None)])
def test_thread_count_reaches_tensorflow(env: dict[str, str], expected: int | None) -> None:
    """The count must be set before TensorFlow's runtime starts, or it is silently ignored."""
    import os
    import subprocess
    import sys

    # The trial module starts TensorFlow (quietly, with the count) when a process first trains.
    code = ("from allsearch.core import cli; cli.quiet_libraries(); import allsearch.training.trial; "
            "import tensorflow as tf; print(tf.config.threading.get_intra_op_parallelism_threads())")
    environment = {k: v for k, v in os.environ.items() if k != "ALLSEARCH_THREADS"}
    done = subprocess.run([sys.executable, "-c", code], env={**environment, **env},
                          capture_output=True, text=True, check=True)
    assert int(done.stdout.split()[-1]) == (expected or 0)  # 0: TensorFlow picks (all cores)


def test_threads_per_worker_splits_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALLSEARCH_THREADS", raising=False)
    monkeypatch.setattr(hardware, "available_cores", lambda: 8)
    assert [hardware.threads_per_worker(w) for w in (1, 2, 3, 16)] == [8, 4, 2, 1]
    monkeypatch.setenv("ALLSEARCH_THREADS", "3")
    assert hardware.threads_per_worker(2) == 3
    monkeypatch.setenv("ALLSEARCH_THREADS", "many")
    with pytest.raises(ConfigError, match="ALLSEARCH_THREADS must be a positive integer"):
        hardware.threads_per_worker(1)


def test_a_worker_thread_count_reaches_tensorflow_started_later() -> None:
    """A worker sets its share of the cores before anything imports TensorFlow."""
    import subprocess
    import sys

    code = ("from allsearch.core import cli; cli.quiet_libraries(threads=1); import sys; "
            "assert 'tensorflow' not in sys.modules; import allsearch.training.trial; "
            "import tensorflow as tf; print(tf.config.threading.get_intra_op_parallelism_threads())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(done.stdout.split()[-1]) == 1
    assert "oneDNN" not in done.stderr and "cuda" not in done.stderr.lower()  # started quietly


POLLED = """
import os, signal
from allsearch.core.hardware import deferred_interrupts, interrupt_pending, on_interrupt, polled_interrupts
signal.signal(signal.SIGINT, on_interrupt)
steps = []
try:
    with polled_interrupts():  # a training loop
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(100000): pass
        steps.append(f"pending {interrupt_pending()}")
        with deferred_interrupts():  # an epoch's metrics written inside it
            pass
        steps.append("the write's end waits for the poll")
except KeyboardInterrupt:
    steps.append("raised when the training ends")
steps.append(f"pending {interrupt_pending()}")
try:
    with deferred_interrupts():  # a training inside a store's write: cut all the same
        with polled_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100000): pass
        steps.append("not reached")
except KeyboardInterrupt:
    steps.append("raised inside the write's block")
print(steps)
"""


def test_a_signal_during_training_is_polled_and_raised_when_it_ends() -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", POLLED], capture_output=True, text=True,
                          timeout=60, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(["pending True", "the write's end waits for the poll",
                                       "raised when the training ends", "pending False",
                                       "raised inside the write's block"])


STOPPED_FIT = """
import os, signal, sys, warnings
import keras
from allsearch.data.dataset import load_dataset
from allsearch.core.hardware import interrupt_pending, on_interrupt
from allsearch.core.space import HParams
from allsearch.training.trial import run_trial

signal.signal(signal.SIGINT, on_interrupt)
ended = []

class Ends(keras.callbacks.Callback):
    def on_train_end(self, logs=None):
        ended.append("fit ended")

warnings.simplefilter("ignore")
dataset = load_dataset(sys.argv[1])
history = {}
try:  # Ctrl-C as the first epoch is recorded: the second stops at its first batch
    run_trial(dataset, HParams(epochs=3, batch_size=8, conv_layers=2, dense_units=16),
              callbacks=[Ends()], history=history,
              on_epoch=lambda epoch, values: os.kill(os.getpid(), signal.SIGINT))
    print("not interrupted")
except KeyboardInterrupt:
    print([len(history["loss"]), ended, interrupt_pending()])
"""


@pytest.mark.train
def test_ctrl_c_ends_fit_the_way_keras_stops_then_raises(tiny_data: Path) -> None:
    """Fit ends as for early stopping (its on_train_end runs, its input pipeline is freed while
    the process runs: a KeyboardInterrupt raised inside fit left tf.data iterators whose deletion
    at exit waited for tf.data's autotuning thread, 10-40 s), the cut epoch is not recorded as
    one, and run_trial raises KeyboardInterrupt."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", STOPPED_FIT, str(tiny_data)],
                          capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == str([1, ["fit ended"], False])


FROZEN = """
import gc, sys, warnings
warnings.simplefilter("ignore")
from allsearch.core.hparams import HParams
from allsearch.data.dataset import load_dataset
from allsearch.training.trial import run_trial

dataset = load_dataset(sys.argv[1])
small = HParams(epochs=1, batch_size=8, conv_layers=1, dense_units=8)
run_trial(dataset, small)
print(gc.get_freeze_count())
"""


@pytest.mark.train
def test_training_from_a_library_call_leaves_the_garbage_collector_alone(tiny_data: Path) -> None:
    """run_trial moves the imports' objects out of the collector's way only in a process of
    allsearch's own (a command or a worker), never in a library caller's."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", FROZEN, str(tiny_data)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) == 0  # (before: the first trial froze the imports' objects)
