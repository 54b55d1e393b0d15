"""The TensorFlow runtime of a camp process: `configure_tensorflow` (quiet logs, $CAMP_THREADS threads, the
runtime started before any model is built), `released_custom_gradients` (what a training run leaves in
TensorFlow's global gradient registry is dropped when it ends) and `memory_usage` (resident memory, logged
per run so growth across a sweep's trials shows). Training, serving and the benches start TensorFlow here.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

from camp import tracking

_GRADIENTS = {"active": 0, "before": set()}
_GRADIENTS_LOCK = threading.Lock()


@contextlib.contextmanager
def released_custom_gradients():
    """Drop the `tf.custom_gradient` registrations a training run leaves in TensorFlow's global gradient
    registry, so a sweep process does not grow with every trial.

    Keras's TensorFlow optimizer sums gradients through `tf.distribute`, which wraps them in
    `tf.custom_gradient`; each trace registers a `CustomGradient-<uid>` function that nothing removes
    (`keras.backend.clear_session()` included), and it holds that trial's whole train-step graph: about
    19 MB per trial (`bench/memory.py`). A registration is only looked up while a gradient is being
    built, so once no run is training its entries are dead. Entries added while any run is active are
    removed when the last one ends. TensorFlow's registry is private API: if it moves, nothing is
    removed (and `bench/memory.py` shows the growth again).
    """
    try:
        from tensorflow.python.framework import ops

        registry = ops.gradient_registry._registry
    except (ImportError, AttributeError):
        registry = None
    with _GRADIENTS_LOCK:
        if registry is not None and _GRADIENTS["active"] == 0:
            _GRADIENTS["before"] = set(registry)
        _GRADIENTS["active"] += 1
    try:
        yield
    finally:
        with _GRADIENTS_LOCK:
            _GRADIENTS["active"] -= 1
            if registry is not None and _GRADIENTS["active"] == 0:
                for key in [key for key in registry if key not in _GRADIENTS["before"]
                            and str(key).startswith("CustomGradient-")]:
                    registry.pop(key, None)


def configure_tensorflow() -> None:
    """Quiet logs and honour CAMP_THREADS (threads per process) before TensorFlow starts."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    threads = os.environ.get("CAMP_THREADS")
    import tensorflow as tf

    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            tf.config.threading.set_inter_op_parallelism_threads(int(threads))
        except RuntimeError:
            pass  # already initialised in this process
    # the first op starts the runtime, which prints CPU-feature and cuInit lines a user cannot act on
    with tracking.stderr_silenced():
        tf.constant(0)


def memory_usage() -> dict[str, float]:
    """This process's resident memory now and at its peak, in MiB (Linux), for growth checks across trials."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        current = pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except (OSError, ValueError, IndexError):
        current = float("nan")
    return {"system/rss_mb": round(current, 1), "system/peak_rss_mb": round(peak, 1)}
