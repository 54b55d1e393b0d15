"""The report's controlled experiments: the latest finished `camp ablate` run on the champion (its
`ablation/ablation.json`), shown first in the sections whose question it answers (colour vs gray, the
crop, loss weighting), with the sweep-based comparison kept below it as secondary. Without one, the
section names the command and how long it would take.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from camp import ablate, names
from camp.report_context import Context
from camp.report_html import Heading, Picture, Table, Text


def find_ablation(context: Context) -> dict | None:
    """The champion's latest finished ablation document, read once per report (None when there is none)."""
    if "ablation" in context.numbers:
        return context.numbers["ablation"] or None
    import mlflow

    client = mlflow.MlflowClient()
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string=f"tags.`{names.ROLE}` = 'ablate' and "
                                            f"tags.`{names.ABLATION_BASE_RUN}` = '{context.champion.run_id}' and "
                                            "attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=20)
    document = None
    for run in runs:
        try:
            document = {**mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/ablation/ablation.json"),
                        "run_id": run.info.run_id}
        except Exception:  # noqa: BLE001 - an ablation interrupted before its result was logged: try an older one
            continue
        try:
            with tempfile.TemporaryDirectory() as directory:
                picture = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=directory,
                                                              artifact_path="ablation/ablation.png")
                (context.out / "ablation.png").write_bytes(Path(picture).read_bytes())
        except Exception:  # noqa: BLE001 - no picture (no knob had two values scored): the tables stand alone
            pass
        break
    context.numbers["ablation"] = document or {}
    return document


def ablation_blocks(context: Context, knob: str, secondary: bool = True) -> list:
    """The controlled experiment on `knob`, or the command that would run it (with its estimated time);
    `secondary`: a sweep-based comparison follows, and is introduced as such."""
    document = find_ablation(context)
    result = next((r for r in (document or {}).get("knobs", []) if r["knob"] == knob), None)
    if result is None:
        return [Text(f"**No controlled experiment on this champion yet for `{knob}`.** `make ablate` (that is, "
                     f"`camp ablate --base champion --missions --workers 2`) trains every value of it, and of the "
                     f"other mission knobs, with all other knobs held at the champion's{_estimate(context)}; "
                     "the comparison below is from the sweep's trials, which differ in other knobs too.")]
    prefix = result["column"]
    labels = list(result["rows"][0]["recall"]) if result["rows"] else []
    scored = [prefix] if prefix != "val" else []  # verdicts on validation: its column is already there
    rows = [[row["value"], row["seeds"], row["val"], *[row[c] for c in scored], *[row["recall"].get(label) for label in labels]]
            for row in result["rows"]]
    held = ", ".join(f"{k}={v}" for k, v in document["held"].items()) or "as the champion"
    blocks = [Heading(f"Controlled experiment: {knob}", level=3),
              Text(f"`camp ablate` run `{document['run_id']}` on {document['base'].get('member') or 'the champion'}: "
                   f"each value trained {document['seeds']} time(s) with every other knob held fixed ({held}). "
                   f"Mean over seeds; verdicts are paired differences on the same {result['split']} images and "
                   "seeds, with a 95% bootstrap interval over both."),
              Table(["value", "seeds", "validation", *([result["split"]] if scored else []),
                     *[f"recall {label}" for label in labels]], rows,
                    anchor=f"ablation-{knob}")]
    blocks += [Text("Verdict: " + pair["verdict"]) for pair in result["pairs"]]
    if (context.out / "ablation.png").is_file() and knob == document["knobs"][0]["knob"]:
        blocks.append(Picture(Path("ablation.png"), "ablation: each value's score per seed", 900))
    return blocks + ([Text("From the sweep (secondary: these trials differ in other knobs too):")] if secondary else [])


def _estimate(context: Context) -> str:
    """' (about N min on 2 workers)' for `make ablate` around this champion, or '' when unknown."""
    try:
        base, info = ablate.base_config(f"models:/{context.champion.name}/{context.champion.version}",
                                        context.config.data_path)
        held, cells = ablate.plan(base, *ablate.parse_flags(ablate.MISSIONS["vary"], ablate.MISSIONS["set"]),
                                  ablate.MISSIONS["seeds"])
        seconds = ablate.estimate_seconds(base, info["seconds"], cells, held, 2)
    except ValueError:
        return ""
    return f", {len(cells)} training runs, about {seconds / 60:.0f} min on 2 workers" if seconds else ""
