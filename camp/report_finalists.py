"""The champion against what it should beat: the trivial floors (said at the top of `camp report`) and the
trials it is made of, on validation and test with bootstrap intervals, and the selection optimism."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from camp import metrics, names, quantize
from camp import report_context as core
from camp.report_context import Context
from camp.report_html import Heading, Table, Text


def floor_verdict(frame: pd.DataFrame, labels: list, split: str, resamples: int = 1000) -> tuple[str, dict]:
    """Does the model beat the trivial floors (always the largest label, chance) on `split`? A sentence
    for the top of the report and its numbers (macro-F1 gains with paired-bootstrap 95% intervals)."""
    readable = frame[frame["error"] == ""]
    y = readable["true"].map(labels.index).to_numpy()
    predicted = readable["predicted"].map(labels.index).to_numpy()
    numbers, short = {}, []
    for name, floor in metrics.trivial_predictions("val/macro_f1", y, len(labels)).items():
        gain, low, high = metrics.paired_bootstrap("val/macro_f1", y, predicted, floor, resamples)
        numbers[name] = {"gain": round(gain, 4), "ci95": [round(low, 4), round(high, 4)]}
        short.append(f"{gain:+.3f} over {name} [{low:+.3f}, {high:+.3f}]")
    if all(value["ci95"][0] > 0 for value in numbers.values()):
        return f"On {split} it beats the trivial floors: macro-F1 " + "; ".join(short) + ".", numbers
    return (f"**Warning: on {split} this model does not clearly beat a trivial floor** (macro-F1 " + "; ".join(short)
            + "): its numbers below describe a model that has learnt little.", numbers)


def _macro_f1_row(name: str, frames: dict, resamples: int) -> tuple[list, dict]:
    """[name, value, low, high per split] for one model's predictions frames, and the numbers."""
    row, numbers = [name], {}
    for split, frame in frames.items():
        readable = frame[frame["error"] == ""]
        y, predicted = readable["true"].to_numpy(), readable["predicted"].to_numpy()
        labels = sorted(set(y) | set(predicted))
        y_index = np.array([labels.index(v) for v in y])
        p_index = np.array([labels.index(v) for v in predicted])
        value = metrics.value("val/macro_f1", y_index, p_index)
        low, high = metrics.bootstrap_interval("val/macro_f1", y_index, p_index, resamples)
        row += [value, low, high]
        numbers[split] = {"macro_f1": round(value, 4), "ci95": [round(low, 4), round(high, 4)]}
    return row, numbers


def finalists_blocks(context: Context) -> list:
    """The champion beside the trials it is made of, on validation (where they were chosen) and test, with
    95% bootstrap intervals, and the selection optimism said plainly."""
    splits = [split for split in ("validation", "test") if split in context.predictions]
    if not splits:
        return []
    tags = context.champion.run.data.tags
    # a distilled student: what it comes from is its teacher's members
    teacher = tags.get(names.TEACHER) or context.champion.version_tags.get(names.TEACHER)
    made_of = mlflow.get_run(teacher).data.tags if teacher else tags
    members = [run for run in made_of.get(names.MEMBERS, "").split(",") if run]
    trials = made_of.get(names.MEMBER_TRIALS, "").split(",")
    rows, numbers = [], {}
    kind = [what for what, present in (("ensemble", len(members) > 1 and not teacher), ("distilled", bool(teacher)),
                                       ("flip test-time augmentation", tags.get(names.TTA) == "flip"),
                                       ("confidence cascade", bool(tags.get(names.CASCADE)))) if present]
    row, numbers["champion"] = _macro_f1_row("champion" + (f" ({', '.join(kind)})" if kind else ""),
                                             {s: context.predictions[s] for s in splits}, context.args.bootstrap)
    rows.append(row)
    with tempfile.TemporaryDirectory() as directory:
        def frames_of(run_id: str, folder: str) -> dict:
            predict = core.run_predictor(run_id, Path(directory) / folder)
            return {s: core.predict_items(predict, context.dataset.split(s), context.labels, s) for s in splits}

        if teacher:
            row, numbers["teacher"] = _macro_f1_row("teacher: the ensemble it was distilled from",
                                                    frames_of(teacher, "teacher"), context.args.bootstrap)
            rows.append(row)
        for position, run_id in enumerate(members):
            frames = frames_of(run_id, str(position))
            name = f"member trial #{trials[position] if position < len(trials) else '?'}"
            member_tags = mlflow.get_run(run_id).data.tags
            source = member_tags.get(names.FINALIST_OF)
            if member_tags.get(names.FIT_ON) == names.TRAIN_AND_VALIDATION:
                name += " (retrained on train + validation)"
            elif source is not None:  # a finalist: the config of trial #source trained again, longer
                name += f" (finalist: trial #{source} refit)"
            row, numbers[name] = _macro_f1_row(name, frames, context.args.bootstrap)
            rows.append(row)
    context.numbers["finalists"] = numbers
    header = ["model"] + [f"{split} {what}" for split in splits for what in ("macro-F1", "95% low", "95% high")]
    blocks = [Heading("The champion and what it is made of", level=3),
              Table(header, rows, anchor="finalists")]
    blocks += _serving_blocks(tags)
    if teacher:
        blocks.append(Text(f"The champion is one CNN distilled from that ensemble (study.finalize.distill): it started "
                           f"from trial #{tags.get(names.FINALIST_OF, '?')}'s model and learnt the ensemble's probabilities "
                           "on the training images, so it serves one forward pass an image, without test-time "
                           "augmentation. Its teacher's and members' rows are float models, as logged."))
    if tags.get(names.FIT_ON) == names.TRAIN_AND_VALIDATION and "test" in numbers["champion"]:
        blocks.append(Text(
            "The champion's members were chosen on validation and then retrained on train + validation "
            f"(study.finalize.train_on_validation): validation scores them on images they were trained on, so only "
            f"test ({numbers['champion']['test']['macro_f1']:.3f}), which chose nothing, is a held-out score."))
    elif "validation" in numbers["champion"] and "test" in numbers["champion"]:
        validation, test = numbers["champion"]["validation"]["macro_f1"], numbers["champion"]["test"]["macro_f1"]
        blocks.append(Text(f"Selection optimism: the champion was chosen on validation, where it scores {validation:.3f}; "
                           f"on test, which chose nothing, it scores {test:.3f} ({test - validation:+.3f}). Test is the "
                           "fairer estimate of what to expect on new photos." + _heldout_sentence(context, test)))
    return blocks


def _heldout_sentence(context: Context, test: float) -> str:
    """The version's held-out estimate (finalize's choice repeated on validation halves it did not choose
    on), where the sweep logged one."""
    tags = context.champion.version_tags
    heldout = tags.get(names.HELDOUT_VALUE)
    if heldout is None:
        return ""
    context.numbers["finalists"]["champion"]["heldout_validation"] = float(heldout)
    return (f" Chosen on half of the validation images and scored on the other half, the same choice scored "
            f"{float(heldout):.3f} (± {float(tags.get(names.HELDOUT_SE, 'nan')):.3f}), "
            f"{test - float(heldout):+.3f} from test: the validation figure that did not pick the champion.")


def _serving_blocks(tags: dict) -> list:
    """A sentence where the champion serves TensorFlow Lite flatbuffers (camp.quantize): its rows are the
    served model's; one where it serves as a confidence cascade; and how fast it served where it was registered."""
    blocks = []
    if tags.get(names.SERVING_SPEED):
        blocks.append(Text(f"Registration measured the champion at {float(tags[names.SERVING_SPEED]):.0f} images/s in "
                           "batches of 256 on the machine that registered it (camp.serving_images_per_second; a "
                           "serving floor for finalize is study.finalize.min_images_per_second)."))
    if tags.get(names.CASCADE):
        blocks.append(Text(f"The champion serves as a confidence cascade (study.finalize.cascade, camp.cascade): one member "
                           "alone answers the images where its top probability reaches a threshold, the whole ensemble "
                           f"the rest, as scored here. On validation: {tags[names.CASCADE]} (the share it answers, and "
                           "how often the served labels match the whole ensemble's)."))
    weights = {quantize.SERVING["int8"]: "8-bit weights", quantize.SERVING["float32"]: "float32 weights"}.get(
        tags.get(names.SERVING))
    if weights is None:
        return blocks
    return blocks + [Text(f"The champion serves its CNNs as TensorFlow Lite flatbuffers with {weights} (camp.quantize), as "
                 "scored here; its members' rows are their Keras models. On the validation images the served labels agree "
                 f"with the Keras models' on {float(tags.get(names.SERVING_AGREEMENT, 'nan')):.1%} of them (registration "
                 "keeps a flatbuffer only from 99%).")]
