"""`make serve`: the champion behind MLflow's own scoring server (`mlflow models serve`) answers two
real photos, sent as base64 in MLflow's standard JSON (`dataframe_split`, `inputs`) or as file paths,
with the labels and probabilities `camp predict` prints for the same files; and the README's Python
and curl examples run as written."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from camp import cli
from tests.conftest import SHARED_DATA
from tests.servers import ARTIFACTS, HOST, REPO, clean_env, free_port, http, make_command, serving

README = REPO / "README.md"
TOLERANCE = 1e-4  # camp predict prints 4 decimals

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("make") is None, reason="needs make")]


@pytest.fixture(scope="module")
def photos(current_smoke_store) -> list[Path]:
    """Two real photos of different labels from clothing-small, copied in as the README's a.jpg, b.jpg."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/datasets/clothing-small is not present")
    picked = [sorted((SHARED_DATA / "test" / source).glob("*.jpg"))[0] for source in ("shoes", "t-shirt")]
    copies = []
    for name, source in zip(("a.jpg", "b.jpg"), picked):
        shutil.copy(source, current_smoke_store / name)
        copies.append(current_smoke_store / name)
    return copies


@pytest.fixture(scope="module")
def server(current_smoke_store):
    """`make serve` on a free port of 127.0.0.1; stopped (process group, by PID) after the module."""
    port = free_port()
    # the operator's opt-in for the path forms (the photos are copied into the store's folder)
    environment = {**clean_env(), "CAMP_SERVE_PATHS": str(current_smoke_store)}
    with serving(make_command("serve", SERVE_PORT=str(port)), f"http://{HOST}:{port}/health",
                 current_smoke_store / "serve.log", env=environment) as process:
        yield f"http://{HOST}:{port}", process.startup_seconds


def camp_predict(capsys, paths) -> list[dict]:
    capsys.readouterr()
    assert cli.main(["predict", *map(str, paths)]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]


def assert_same_answer(answer, expected: list[dict], form: str):
    assert isinstance(answer, dict) and "predictions" in answer, f"{form}: {str(answer)[:500]}"
    rows = answer["predictions"]
    assert len(rows) == len(expected), form
    for row, reference in zip(rows, expected):
        assert row["error"] == "", f"{form}: {row['error']}"
        assert row["label"] == reference["label"], form
        for label, probability in reference["probabilities"].items():
            assert abs(row[f"p_{label}"] - probability) <= TOLERANCE, (form, label, row[f"p_{label}"], probability)


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def test_make_serve_answers_like_camp_predict(server, photos, capsys):
    server, startup_seconds = server
    expected = camp_predict(capsys, photos)
    encoded = [b64(path) for path in photos]
    forms = {
        "dataframe_split, base64": {"dataframe_split": {"columns": ["image"], "data": [[text] for text in encoded]}},
        "inputs, base64": {"inputs": {"image": encoded}},
        "dataframe_split, file paths": {"dataframe_split": {"columns": ["image"],
                                                            "data": [[str(path)] for path in photos]}},
        "dataframe_records, file paths": {"dataframe_records": [{"image": str(path)} for path in photos]},
    }
    for form, body in forms.items():
        status, answer = http(f"{server}/invocations", body)
        assert status == 200, f"{form}: HTTP {status}: {str(answer)[:500]}"
        assert_same_answer(answer, expected, form)

    # an unreadable item is answered with an error; the other one still gets its label
    status, answer = http(f"{server}/invocations", {"inputs": {"image": [base64.b64encode(b"hello").decode(), encoded[0]]}})
    assert status == 200
    bad, good = answer["predictions"]
    assert bad["label"] == "" and bad["error"] and good["label"] == expected[0]["label"]
    # its probabilities are JSON null (a bare NaN is not JSON: JSON.parse and strict parsers reject it)
    assert all(bad[f"p_{label}"] is None for label in expected[0]["probabilities"]), bad

    # round trip of the two photos as base64 dataframe_split (the server is warm: 5 requests above)
    body = forms["dataframe_split, base64"]
    timings = []
    for _ in range(7):
        started = time.perf_counter()
        status, _ = http(f"{server}/invocations", body)
        timings.append(time.perf_counter() - started)
        assert status == 200
    record = {"request": "POST /invocations, dataframe_split, 2 base64 JPEGs",
              "bytes": len(json.dumps(body)), "repeats": len(timings),
              "median_ms": round(1000 * statistics.median(timings), 1),
              "min_ms": round(1000 * min(timings), 1), "max_ms": round(1000 * max(timings), 1),
              "server_start_s": round(startup_seconds, 1)}
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "serve_roundtrip.json").write_text(json.dumps(record, indent=2) + "\n")
    with capsys.disabled():
        print(f"\nserve round trip (2 photos, base64 dataframe_split): median {record['median_ms']} ms "
              f"(min {record['min_ms']}, max {record['max_ms']}, {record['repeats']} requests; "
              f"make serve answered /health {record['server_start_s']} s after start) "
              f"-> {ARTIFACTS / 'serve_roundtrip.json'}")


def test_hostile_paths_get_their_own_error_quickly_and_the_other_items_are_answered(server, photos,
                                                                                    current_smoke_store, capsys):
    """Issue 16's served paths, over HTTP: a system file and /dev/zero outside the opted-in folder, a FIFO
    and a directory inside it. Each gets a per-item error without being read (a read of /dev/zero would
    not end, a FIFO would block a worker thread), and the photo sent beside them is still labelled."""
    server, _ = server
    expected = camp_predict(capsys, photos[:1])
    fifo, folder = current_smoke_store / "pipe.jpg", current_smoke_store / "folder.jpg"
    if not fifo.exists():
        os.mkfifo(fifo)
    folder.mkdir(exist_ok=True)
    photo = b64(photos[0])
    hostile = {"/etc/passwd": ("/etc/passwd", "not base64-encoded"), "/dev/zero": ("/dev/zero", "not base64-encoded"),
               "a FIFO": (str(fifo), "not a regular file"), "a directory": (str(folder), "not a regular file")}
    timings = {}
    for name, (value, error) in hostile.items():
        started = time.perf_counter()
        status, answer = http(f"{server}/invocations", {"inputs": {"image": [value, photo]}}, timeout=30)
        timings[name] = round(time.perf_counter() - started, 3)
        assert status == 200, f"{name}: HTTP {status}: {str(answer)[:500]}"
        bad, good = answer["predictions"]
        assert bad["label"] == "" and error in bad["error"], (name, bad["error"])
        assert good["error"] == "" and good["label"] == expected[0]["label"], (name, good)
    # all four in one request with the photo between them
    values = [value for value, _ in hostile.values()]
    status, answer = http(f"{server}/invocations", {"inputs": {"image": [*values[:2], photo, *values[2:]]}}, timeout=30)
    assert status == 200
    rows = answer["predictions"]
    assert [row["label"] == "" for row in rows] == [True, True, False, True, True]
    assert rows[2]["label"] == expected[0]["label"]
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "serve_hostile_paths.json").write_text(json.dumps({"request_seconds": timings}, indent=2) + "\n")
    with capsys.disabled():
        print(f"\nserve, hostile paths beside one photo: seconds per request {timings}")


def readme_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def readme_commands() -> list[str]:
    """Every command line of the README's bash blocks (continuations joined, comments kept)."""
    commands = []
    for block in readme_blocks("bash"):
        for command in re.sub(r"\\\n\s*", "", block).splitlines():
            if command.strip() and not command.lstrip().startswith("#"):
                commands.append(command.strip())
    return commands


def test_readme_curl_examples_answer_like_camp_predict(server, photos, capsys):
    server, _ = server
    if shutil.which("curl") is None or shutil.which("base64") is None:
        pytest.skip("the README's HTTP examples need curl and base64 (GNU coreutils)")
    examples = [command for command in readme_commands() if "| curl" in command]
    assert len(examples) == 3, examples
    expected = camp_predict(capsys, photos)
    for example in examples:
        assert "http://127.0.0.1:5001/invocations" in example
        command = example.replace("http://127.0.0.1:5001", server)
        result = subprocess.run(["bash", "-c", command], cwd=photos[0].parent, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr
        assert_same_answer(json.loads(result.stdout), expected, example[:60])


def test_readme_python_example_loads_the_champion(current_smoke_store, photos, capsys):
    """The README's three lines, run as written in a fresh Python whose working directory holds
    camp's store as `mlruns/` (the repository root's layout) and a photo as photo.jpg."""
    (snippet,) = readme_blocks("python")
    assert len(snippet.strip().splitlines()) == 3
    exports = [command for command in readme_commands() if command.startswith("export MLFLOW_TRACKING_URI=")]
    uri = exports[0].split("=", 1)[1].split("#")[0].strip()
    assert uri == "sqlite:///$PWD/mlruns/mlflow.db"  # absolute once the shell expands it, as run in the root
    uri = uri.replace("$PWD", str(current_smoke_store))
    shutil.copy(photos[0], current_smoke_store / "photo.jpg")
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment["MLFLOW_TRACKING_URI"] = uri
    result = subprocess.run([sys.executable, "-c", snippet], cwd=current_smoke_store, env=environment,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = camp_predict(capsys, [current_smoke_store / "photo.jpg"])[0]
    printed = result.stdout.split()
    assert expected["label"] in printed and "p_shoes" in printed and "error" in printed
