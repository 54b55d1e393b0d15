"""camp.runtime: the gradient registrations a run leaves are dropped when the last active run ends (and
only those), and resident memory is read as numbers."""

from __future__ import annotations

from camp import runtime


def test_custom_gradients_added_while_runs_are_active_are_dropped_when_the_last_one_ends():
    from tensorflow.python.framework import ops

    registry = ops.gradient_registry._registry
    with runtime.released_custom_gradients():
        registry["CustomGradient-camp-test-1"] = object()
        with runtime.released_custom_gradients():  # a second run (another thread) overlapping the first
            registry["CustomGradient-camp-test-2"] = object()
            registry["camp-test-other-op"] = object()  # not a custom gradient: never touched
        assert {"CustomGradient-camp-test-1", "CustomGradient-camp-test-2"} <= set(registry)
    try:
        assert not {"CustomGradient-camp-test-1", "CustomGradient-camp-test-2"} & set(registry)
        assert "camp-test-other-op" in registry
    finally:
        registry.pop("camp-test-other-op", None)


def test_memory_usage_reads_this_process():
    usage = runtime.memory_usage()
    assert set(usage) == {"system/rss_mb", "system/peak_rss_mb"}
    assert 0 < usage["system/rss_mb"] <= usage["system/peak_rss_mb"] * 1.01
