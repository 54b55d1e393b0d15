"""camp.report_finalists: the verdict at the top of the report on whether the model beats the trivial floors."""

from __future__ import annotations

import numpy as np
import pandas as pd

from camp.report_finalists import floor_verdict

LABELS = ["cap_and_hat", "outerwear", "tops", "bottoms", "shoes"]


def _frame(accuracy: float, n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 5, n)
    predicted = np.where(rng.random(n) < accuracy, truth, rng.integers(0, 5, n))
    return pd.DataFrame({"true": [LABELS[i] for i in truth], "predicted": [LABELS[i] for i in predicted],
                         "error": [""] * n})


def test_a_model_that_learnt_something_is_said_to_beat_the_floors():
    text, numbers = floor_verdict(_frame(0.8), LABELS, "validation", resamples=300)
    assert text.startswith("On validation it beats the trivial floors") and "Warning" not in text
    assert set(numbers) == {"largest label", "chance"} and all(v["ci95"][0] > 0 for v in numbers.values())


def test_a_chance_level_model_is_flagged_at_the_top():
    frame = _frame(0.0, seed=3)
    frame.loc[5, "error"] = "corrupt JPEG"  # unreadable rows are left out, not counted as wrong
    text, numbers = floor_verdict(frame, LABELS, "test", resamples=300)
    assert text.startswith("**Warning: on test this model does not clearly beat a trivial floor**")
    assert numbers["chance"]["ci95"][0] <= 0


def test_the_held_out_estimate_is_stated_beside_test_where_the_sweep_logged_one():
    from types import SimpleNamespace

    from camp import report_finalists

    champion = SimpleNamespace(version_tags={"camp.heldout_value": "0.8100", "camp.heldout_se": "0.0040"})
    context = SimpleNamespace(champion=champion, numbers={"finalists": {"champion": {}}})
    sentence = report_finalists._heldout_sentence(context, 0.83)
    assert "0.810 (± 0.004)" in sentence and "+0.020 from test" in sentence
    assert context.numbers["finalists"]["champion"]["heldout_validation"] == 0.81
    champion.version_tags = {}  # a version registered before camp logged the estimate
    assert report_finalists._heldout_sentence(context, 0.83) == ""


def test_a_flatbuffer_champion_says_so_and_a_keras_one_says_nothing():
    from camp import report_finalists

    (block,) = report_finalists._serving_blocks({"camp.serving": "int8", "camp.serving_agreement": "0.9968"})
    assert "8-bit weights" in block.text and "99.7% of them" in block.text
    (block,) = report_finalists._serving_blocks({"camp.serving": "tflite-float32", "camp.serving_agreement": "1.0"})
    assert "float32 weights" in block.text and "100.0% of them" in block.text
    assert report_finalists._serving_blocks({"camp.serving": "float"}) == []
    assert report_finalists._serving_blocks({}) == []  # a version logged before camp quantized


def test_a_cascade_champion_says_what_its_gate_answers():
    from camp import report_finalists

    tag = "gate trial 0, threshold 0.6330, answers 0.7605, agreement 0.9903"
    (block,) = report_finalists._serving_blocks({"camp.cascade": tag})
    assert "confidence cascade" in block.text and tag in block.text
