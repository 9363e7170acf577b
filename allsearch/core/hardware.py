"""What this machine can do for training: native bf16, and how many threads to use.

Imports nothing heavy: the study supervisor decides the precision before any worker loads
TensorFlow.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any, Literal

from allsearch.core.errors import ConfigError

__all__ = ["Precision", "PRECISIONS", "bf16_support", "resolve_precision", "available_cores",
           "threads_per_worker", "configure_threads", "package_versions", "use_threads",
           "start_tensorflow", "held_interrupts", "on_interrupt", "raise_if_interrupted",
           "deferred_interrupts", "interruptible", "polled_interrupts", "interrupt_pending",
           "process_age_s", "resident_mb", "physical_memory", "own_process", "owns_process"]

Precision = Literal["float32", "bfloat16"]
_PRECISION: dict[str, Precision] = {"float32": "float32", "bfloat16": "bfloat16"}
# What a user may ask for: "auto" is bfloat16 where the CPU computes it natively.
PRECISIONS: tuple[str, ...] = ("auto", *_PRECISION)
_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
# What a run records of its environment (params version.*), enough to rebuild its model.
_PACKAGES = ("allsearch", "tensorflow", "jax", "torch", "keras", "optuna", "optuna-integration",
             "mlflow", "keras-tuner", "numpy", "scikit-learn", "scikit-image", "pandas", "pillow",
             "joblib")


def bf16_support() -> str:
    """The CPU features that compute bfloat16 natively ('amx_bf16 avx512_bf16'), or ''.

    Without them TensorFlow emulates bf16, which is slower than float32.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[-1].split())
                    return " ".join(f for f in _BF16_CPU_FLAGS if f in flags)
    except OSError:
        pass
    return ""


def resolve_precision(requested: str) -> tuple[Precision, str]:
    """(precision to train in, why): 'auto' picks bfloat16 on a CPU with native bf16."""
    if requested not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {list(PRECISIONS)}, got {requested!r}")
    if requested in _PRECISION:  # also a precision resolved already: at once
        return _PRECISION[requested], "asked for"
    support = bf16_support()
    if support:
        return "bfloat16", f"auto: the CPU has {support}"
    return "float32", "auto: the CPU has no native bf16"


def available_cores() -> int:
    """Cores this process may run on (a container's or taskset's limit, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    """Threads for each of `workers` training processes on this machine: $ALLSEARCH_THREADS
    when set (containers that share a host set it), else the cores split evenly."""
    value = os.environ.get("ALLSEARCH_THREADS", "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ConfigError(f"ALLSEARCH_THREADS must be a positive integer, got {value!r}")
        return int(value)
    return max(1, available_cores() // max(1, workers))


def configure_threads(n_threads: int) -> bool:
    """Threads TensorFlow may use in this process; False when its runtime has already started
    (the count cannot change then: set it before the first TensorFlow operation)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(n_threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, n_threads)))
    except RuntimeError:
        return False
    return True


def package_versions() -> dict[str, str]:
    """The installed versions of the packages a run depends on, and Python's."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    versions["python"] = platform.python_version()
    return versions


_threads: int | None = None  # what use_threads asked for, applied when TensorFlow starts


def use_threads(n_threads: int) -> None:
    """The TensorFlow thread count of this process, applied when its runtime starts (now, if
    it already has: a runtime that has run an operation keeps its count)."""
    global _threads
    _threads = n_threads
    if "tensorflow" in sys.modules:
        configure_threads(n_threads)


def start_tensorflow() -> None:
    """Import TensorFlow once per process, quietly and with the thread count of use_threads
    (else $ALLSEARCH_THREADS); a process that trains nothing never pays for it.

    TensorFlow writes its start-up lines (oneDNN, CUDA probing) straight to file descriptor 2,
    ignoring TF_CPP_MIN_LOG_LEVEL: they are hidden while it starts. Under another Keras
    backend (KERAS_BACKEND=jax, on a machine without TensorFlow) this does nothing.
    """
    if "tensorflow" in sys.modules or os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        return  # started already (by the caller, too): nothing of theirs changes
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    threads = _threads or (threads_per_worker(1) if os.environ.get("ALLSEARCH_THREADS") else None)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        # TensorFlow's import swallows a KeyboardInterrupt raised inside it (seen: Ctrl-C two
        # seconds into a study, and the study went on): signals wait for the import's end.
        with held_interrupts(), open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                import tensorflow as tf

                if threads:
                    configure_threads(threads)
                tf.constant(0)  # starts the runtime: the CUDA probe logs here, once
            except ImportError:
                pass  # Keras reports a missing backend itself, with its message
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def held_interrupts() -> Iterator[None]:
    """SIGINT and SIGTERM that arrive inside the block are held and delivered when it ends
    (to the handlers that were in place), so code that catches every exception cannot eat a
    Ctrl-C. Only the main thread handles signals; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig, handler in previous.items():
        if handler not in (signal.SIG_IGN, None):
            signal.signal(sig, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)
        if caught:
            os.kill(os.getpid(), caught[0])  # the restored handler runs it now


_hold = 0  # > 0: a store is being written, and a signal waits for the end of it
_polled = 0  # > 0: a model is training, and a signal waits for its next batch
_pending = False  # a signal came that the program has not seen as KeyboardInterrupt yet


def on_interrupt(signum: int, frame: object) -> None:
    """The handler of SIGINT, SIGTERM and SIGHUP in allsearch's commands and workers: ends
    the work as Ctrl-C does, at once, or, inside `deferred_interrupts`, when the write in
    progress is done, or, inside `polled_interrupts`, at the training's next batch. A
    KeyboardInterrupt raised while a store's transaction is half done can leave its connection
    holding a lock (a heartbeat thread then waited on it), and one raised in a finalizer or
    weakref callback is dropped by Python (a Ctrl-C between two trials was lost that way):
    such an interrupt is kept and raised at the next safe point."""
    global _pending
    sys.unraisablehook = _dropped_interrupt_is_kept
    if _hold or _polled:
        _pending = True
        return
    _pending = False
    raise KeyboardInterrupt


def _dropped_interrupt_is_kept(unraisable: Any) -> None:
    # Python's "Exception ignored in ..." report: the interrupt it dropped is raised again at
    # the next safe point, quietly; anything else is reported as Python would.
    global _pending
    if issubclass(unraisable.exc_type, KeyboardInterrupt):
        _pending = True
        return
    sys.__unraisablehook__(unraisable)


def interrupt_pending() -> bool:
    """Has a signal come that is held or dropped (not raised yet)? What training polls."""
    return _pending


def raise_if_interrupted() -> None:
    """A safe point: raise the KeyboardInterrupt of a signal that was held or dropped."""
    global _pending
    if _pending:
        _pending = False
        raise KeyboardInterrupt


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Signals inside the block wait for its end (raised there as KeyboardInterrupt, or, when
    the block ends by an exception, at the next safe point; inside `polled_interrupts`, at
    the next poll). For the main thread's writes to a store: a study's trial loop, a run's
    per-epoch metrics, a pruner's report."""
    global _hold
    _hold += 1
    try:
        yield
    finally:
        _hold -= 1
    if not _hold and not _polled:
        raise_if_interrupted()


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Signals inside the block raise KeyboardInterrupt at once, also within
    `deferred_interrupts`: for a trial, which writes nothing but through callbacks that
    defer again (its training polls: `polled_interrupts`)."""
    global _hold
    saved, _hold = _hold, 0
    try:
        raise_if_interrupted()
        yield
    finally:
        _hold = saved


@contextlib.contextmanager
def polled_interrupts() -> Iterator[None]:
    """Signals inside the block only set `interrupt_pending`, which the block polls (a
    training loop, at each batch's end) to stop its work the way it stops normally; the
    KeyboardInterrupt is raised when the block ends (also within `deferred_interrupts`: the
    work was cut, and must not pass for whole). A KeyboardInterrupt raised inside Keras' fit
    left its input pipeline's iterators alive until the process ended, and deleting one
    waited for tf.data's autotuning thread (up to a minute; 10-40 s seen)."""
    global _polled
    _polled += 1
    try:
        raise_if_interrupted()
        yield
    finally:
        _polled -= 1
    if not _polled:
        raise_if_interrupted()


def process_age_s() -> float | None:
    """Seconds since this process started (Linux /proc), or None where unknown."""
    try:
        fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        uptime = float(open("/proc/uptime").read().split()[0])
        return max(0.0, uptime - started)
    except (OSError, ValueError, IndexError):
        return None


def physical_memory() -> int | None:
    """The machine's physical memory in bytes, or None where the system does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def resident_mb() -> float | None:
    """This process's resident memory now (Linux /proc), in MB, or None where unknown."""
    try:
        pages = int(open("/proc/self/statm").read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


_owned = False  # a command or worker process of allsearch's own, not a library caller's


def own_process() -> None:
    """Said by allsearch's commands (cli.main_wrapper) and worker processes: the process is a
    study's, which may tune it for many trials (today: the garbage collector, see
    training.trial). A library caller's process is the caller's: nothing is tuned there."""
    global _owned
    _owned = True


def owns_process() -> bool:
    return _owned
