"""README.md is true: every command in it is run by a test or by CI (a table below says which, and this
file runs the cheap ones); its study-file table documents every key with its real default; its
examples (study file, label map, the picture) are what camp reads and draws."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from camp import cli
from tests.servers import clean_env

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
TESTS = REPO / "tests"
HERE = "tests/test_readme.py"

#: (pattern a README command matches, where it runs). A place is "tests/FILE.py::test_name" (that
#: test runs it, or the same thing with test data in place of a placeholder), "tests/FILE.py" (a
#: test file of its own) or ".ci/run" (CI runs it literally). The first matching pattern counts.
COVERAGE = [
    (r"make sweep SEED=\d+$", [f"{HERE}::test_make_targets_run_the_documented_commands",
                               "tests/test_finalize.py::test_with_seed_sets_the_training_and_sampler_seeds"]),
    (r"make sweep SWEEP=sweeps/serve-fast\.yaml$", [f"{HERE}::test_make_targets_run_the_documented_commands",
                                                   "tests/test_distill.py::test_serve_fast_is_the_default_study_with_distillation"]),
    (r"make sweep$", [f"{HERE}::test_make_targets_run_the_documented_commands",
                      "tests/test_sweep.py::test_smoke_sweep_tracks_every_trial_and_registers_a_champion"]),
    (r"make test$", [".ci/run"]),
    (r"make (help|setup|data|train|test-fast|clean-cache)$", [f"{HERE}::test_make_targets_run_the_documented_commands"]),
    (r"make ui\b", ["tests/test_ui.py::test_mlflow_ui_lists_the_sweep_and_the_champion",
                    "tests/test_ui.py::test_mlflow_ui_renders_in_headless_chromium"]),
    (r"make dashboard\b", ["tests/test_ui.py::test_make_dashboard_serves_the_study_journal",
                           f"{HERE}::test_make_targets_run_the_documented_commands"]),
    (r"make serve\b", ["tests/test_serve.py::test_make_serve_answers_like_camp_predict"]),
    (r"make predict\b", [f"{HERE}::test_make_targets_run_the_documented_commands",
                         "tests/test_sweep.py::test_camp_predict_prints_one_json_line_per_image"]),
    (r"make (report|clean)\b", ["tests/test_report.py"]),
    (r"make cluster-(up|down)\b", ["tests/test_scaleout.py"]),
    (r"source \.cluster/env$", ["tests/test_scaleout.py::test_three_workers_on_postgres_survive_a_killed_worker"]),
    (r"sudo |mlflow server\b", ["tests/test_scaleout.py::test_readme_database_host_commands_as_written"]),
    (r"mlflow models serve\b", ["tests/test_serve.py::test_make_serve_answers_like_camp_predict"]),
    (r"export MLFLOW_TRACKING_URI=", ["tests/test_serve.py::test_readme_python_example_loads_the_champion"]),
    (r"printf .*\| curl -s http://127\.0\.0\.1:5001/invocations",
     ["tests/test_serve.py::test_readme_curl_examples_answer_like_camp_predict"]),
    (r"camp (--help|COMMAND --help)", [f"{HERE}::test_camp_commands_in_the_readme_parse"]),
    (r"camp predict\b", ["tests/test_sweep.py::test_camp_predict_prints_one_json_line_per_image",
                         "tests/test_serve.py::test_make_serve_answers_like_camp_predict"]),
    (r"camp data summary --data DIR --label-map my_map\.yaml", [f"{HERE}::test_bring_your_own_data_example"]),
    (r"camp data summary\b", ["tests/test_cli.py::test_data_summary_json", "tests/test_cli.py::test_data_summary_table"]),
    (r"camp preprocess show\b", [f"{HERE}::test_the_picture_is_what_camp_preprocess_show_draws",
                                 "tests/test_cli.py::test_preprocess_show_writes_the_grid"]),
    (r"camp train\b", [f"{HERE}::test_camp_train_runs_a_fixed_study_file",
                       "tests/test_train.py::test_train_logs_one_complete_run"]),
    (r"camp sweep \S+ --storage postgresql(\+\w+)?://", [f"{HERE}::test_scaling_out_command_on_an_rdb_storage"]),
    (r"camp sweep\b", ["tests/test_sweep.py::test_smoke_sweep_tracks_every_trial_and_registers_a_champion",
                       "tests/test_sweep.py::test_a_stopped_study_resumes_to_the_asked_number_of_trials",
                       "tests/test_sweep.py::test_two_workers_share_one_journal"]),
    (r"camp (report|clean)\b", ["tests/test_report.py"]),
    (r"make ablate$", [f"{HERE}::test_make_targets_run_the_documented_commands",
                       "tests/test_ablate.py::test_the_report_shows_the_champions_ablation_or_names_the_command"]),
    (r"camp ablate\b", ["tests/test_ablate.py::test_a_knob_that_cannot_matter_gives_no_difference",
                        "tests/test_ablate.py::test_after_ctrl_c_a_rerun_trains_only_the_missing_cells"]),
]
COMMAND_START = re.compile(r"^(make|camp|mlflow|optuna-dashboard|python|pip|curl|printf|export|git) ")


def readme() -> str:
    return README.read_text(encoding="utf-8")


def fenced(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", readme(), flags=re.S)


def block_commands() -> list[str]:
    """Each command line of the README's bash blocks, continuations joined, comments dropped."""
    commands = []
    for block in fenced("bash"):
        for line in re.sub(r"\\\n\s*", "", block).splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                commands.append(re.sub(r"\s+#.*$", "", line) if not line.startswith("printf") else line)
    return commands


def inline_commands() -> list[str]:
    """Inline code spans outside fenced blocks that are commands (`make ui`, `camp predict ...`)."""
    prose = re.sub(r"```.*?```", "", readme(), flags=re.S)
    spans = [re.sub(r"\s+", " ", span).strip() for span in re.findall(r"`([^`]+)`", prose)]
    return [span for span in spans if COMMAND_START.match(span)]


def where_run(command: str) -> list[str]:
    for pattern, places in COVERAGE:
        if re.match(pattern, command):
            return places
    return []


def test_every_readme_command_is_run_by_a_test_or_by_ci():
    commands = block_commands() + inline_commands()
    assert len(commands) > 20
    uncovered = [command for command in commands if not where_run(command)]
    assert not uncovered, f"README commands no test or CI runs (add a test and a COVERAGE row): {uncovered}"
    for command in commands:
        for place in where_run(command):
            path, _, test = place.partition("::")
            assert (REPO / path).is_file(), f"{command!r}: {path} does not exist"
            text = (REPO / path).read_text()
            if path == ".ci/run":
                assert re.search(rf"^\s*{re.escape(command)}\b", text, flags=re.M), f"{command!r} not in .ci/run"
            elif test:
                assert re.search(rf"^def {test}\(", text, flags=re.M), f"{command!r}: no test {place}"


def make(*arguments: str) -> str:
    """`make -n` (print, do not run) in the repository, with the install stamp taken as up to date,
    and the Makefile's own defaults (no $MLFLOW_TRACKING_URI from the caller)."""
    environment = {key: value for key, value in clean_env().items() if key != "MLFLOW_TRACKING_URI"}
    result = subprocess.run(["make", "-n", "-s", "-C", str(REPO), "-o", ".venv/.installed", *arguments],
                            capture_output=True, text=True, timeout=60, env=environment)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_targets_run_the_documented_commands():
    result = subprocess.run(["make", "-s", "-C", str(REPO), "help"], capture_output=True, text=True, timeout=60,
                            env=clean_env())
    assert result.returncode == 0
    listed = set(re.findall(r"^\s+make (\S+)", result.stdout, flags=re.M))
    used = {command.split()[1] for command in block_commands() + inline_commands()
            if command.startswith("make ") and len(command.split()) > 1}
    assert used <= listed, f"README uses targets `make help` does not list: {used - listed}"
    assert ".venv/bin/camp sweep sweeps/default.yaml --workers 2" in make("sweep")
    assert ".venv/bin/camp sweep sweeps/default.yaml --workers 2 --seed 43" in make("sweep", "SEED=43")
    assert ".venv/bin/camp sweep sweeps/serve-fast.yaml --workers 2" in make("sweep", "SWEEP=sweeps/serve-fast.yaml")
    assert ".venv/bin/camp train sweeps/baseline.yaml" in make("train")
    assert ".venv/bin/camp ablate --base champion --missions --workers 2" in make("ablate")
    assert ".venv/bin/camp predict a.jpg b.jpg" in make("predict", "IMAGES=a.jpg b.jpg")
    assert "pytest -q -m \"not slow\"" in make("test-fast")
    assert "rm -rf .cache/camp" in make("clean-cache")
    assert "clothing-dataset-small" in make("data")
    ui = make("ui")
    assert "mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --host 127.0.0.1 --port 5000" in ui
    serve = make("serve")
    assert 'mlflow models serve -m "models:/camp-classifier@champion" --env-manager local --host 127.0.0.1 --port 5001' in serve
    assert "optuna-dashboard \"mlruns/optuna.journal\" --host 127.0.0.1 --port 8080" in make("dashboard")
    assert "optuna-dashboard \"sqlite:///optuna.db\"" in make("dashboard", "STORAGE=sqlite:///optuna.db")
    assert "--port 5123" in make("serve", "SERVE_PORT=5123") and "--port 5124" in make("ui", "PORT=5124")


def test_camp_commands_in_the_readme_parse(capsys):
    """Every `camp ...` line of the README's blocks parses with camp's own parser, and each option it
    shows exists; every subcommand named inline exists."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    usage = capsys.readouterr().out
    commands = [command for command in block_commands() + inline_commands() if command.startswith("camp ")]
    subcommands = {command.split()[1] for command in commands if not command.split()[1].startswith("-")}
    subcommands.discard("COMMAND")
    assert subcommands <= set(re.findall(r"\{([^}]*)\}", usage)[0].split(",")), subcommands
    parser = cli.build_parser()
    for command in [command for command in block_commands() if command.startswith("camp ")]:
        concrete = shlex.split(re.sub(r"\[[^\]]*\]", "", command))[1:]  # the optional [...] left out
        path = [word for word in concrete if not word.startswith("-")][:2]
        subparser = parser._subparsers._group_actions[0].choices[path[0]]
        if path[0] in ("data", "preprocess"):
            subparser = subparser._subparsers._group_actions[0].choices[path[1]]
        known = {option for action in subparser._actions for option in action.option_strings}
        shown = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", command))
        assert shown <= known, f"{command!r}: options {shown - known} do not exist"
        parser.parse_args(concrete)  # a usage error would exit 2


def readme_table() -> dict[str, str]:
    rows = re.findall(r"^\| `([a-z_.]+)` \| ([^|]+) \|", readme(), flags=re.M)
    return {key: default.strip().strip("`") for key, default in rows}


def as_readme(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def test_study_file_table_documents_every_key_with_its_default():
    from camp import config
    from camp.model import ModelConfig
    from camp.preprocess import PreprocessConfig

    table = readme_table()
    expected = {"seed": "42"}
    sections = {"study": config.StudyConfig, "study.sampler": config.SamplerConfig, "study.pruner": config.PrunerConfig,
                "study.finalize": config.FinalizeConfig,
                "study.promotion": config.PromotionConfig, "data": config.DataConfig, "preprocess": PreprocessConfig, "model": ModelConfig}
    for prefix, cls in sections.items():
        for field in dataclasses.fields(cls):
            if dataclasses.is_dataclass(field.type) or field.name in ("sampler", "pruner", "finalize", "promotion"):
                continue
            expected[f"{prefix}.{field.name}"] = as_readme(field.default)
    missing = sorted(set(expected) - set(table))
    assert not missing, f"study-file keys the README's table leaves out: {missing}"
    special = {"study.name": "the file's name", "study.direction": "from the metric"}
    wrong = {key: (table[key], value) for key, value in expected.items()
             if table[key] != special.get(key, value)}
    assert not wrong, f"README default != code default (README, code): {wrong}"


def test_readme_study_file_and_label_map_examples_are_valid(tmp_path):
    from camp import config, data
    from camp.model import ModelConfig
    from camp.preprocess import PreprocessConfig
    from camp.space import parse_space

    study_yaml, label_map_yaml = fenced("yaml")[1], fenced("yaml")[0]
    if "labels:" in study_yaml:
        study_yaml, label_map_yaml = label_map_yaml, study_yaml
    (tmp_path / "my-study.yaml").write_text(study_yaml)
    study_file = config.load_study_file(tmp_path / "my-study.yaml")
    assert study_file.study.name == "my-study" and study_file.study.n_trials == 30
    assert len(parse_space("preprocess", study_file.preprocess, PreprocessConfig, study_file.path)) == 2
    assert len(parse_space("model", study_file.model, ModelConfig, study_file.path)) == 3
    (tmp_path / "my_map.yaml").write_text(label_map_yaml)
    label_map = data.load_label_map(str(tmp_path / "my_map.yaml"))
    assert label_map.labels == ("cap_and_hat", "outerwear", "tops", "bottoms", "shoes")


def test_bring_your_own_data_example(tmp_path, synthetic_data, capsys, monkeypatch):
    """`camp data summary --data DIR --label-map my_map.yaml` on a folder with the README map's own
    class names (synthetic images renamed), run as written but for DIR."""
    (label_map_yaml,) = [block for block in fenced("yaml") if "labels:" in block]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CAMP_CACHE", str(tmp_path / "cache"))
    (tmp_path / "my_map.yaml").write_text(label_map_yaml)
    renamed = {"hat": "beanie", "outwear": "parka", "t-shirt": "blouse", "pants": "jeans", "shoes": "sneakers"}
    for split in ("train", "validation"):
        for source, name in renamed.items():
            shutil.copytree(synthetic_data / split / source, tmp_path / "DIR" / split / name)
    shutil.copytree(synthetic_data / "train" / "hat", tmp_path / "DIR" / "train" / "scarf")
    (command,) = [c for c in block_commands() if c.startswith("camp data summary --data DIR --label-map my_map.yaml")]
    assert cli.main(shlex.split(command)[1:] + ["--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["splits"]["train"] == dict.fromkeys(["cap_and_hat", "outerwear", "tops", "bottoms", "shoes"], 16)
    assert summary["dropped"]["scarf"]["count"] == 16


def test_the_picture_is_what_camp_preprocess_show_draws(tmp_path, synthetic_data, capsys, monkeypatch):
    """docs/preprocessing.png: small, and the grid `camp preprocess show` draws from the synthetic
    test images (same size: 5 labels x 3 panels)."""
    import cv2

    picture = REPO / "docs" / "preprocessing.png"
    assert "](docs/preprocessing.png)" in readme()
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.stat().st_size < 150_000
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CAMP_CACHE", str(tmp_path / "cache"))
    (command,) = [c for c in block_commands() if c.startswith("camp preprocess show --data DIR")]
    words = [str(synthetic_data) if word == "DIR" else word for word in shlex.split(command)[1:]]
    assert cli.main([*words, "--per-label", "1", "--config", str(REPO / "sweeps" / "baseline.yaml")]) == 0
    drawn = cv2.imread(str(tmp_path / "reports" / "preprocessing.png"))
    assert drawn is not None and drawn.shape == cv2.imread(str(picture)).shape


def test_camp_train_runs_a_fixed_study_file(isolated, synthetic_data, capsys):
    """`camp train FILE` end to end from the command line (a tiny fixed study in place of the
    baseline's 20 epochs on the real photos)."""
    (isolated / "tiny.yaml").write_text(
        "study: {name: tiny}\ndata: {max_per_class: 6}\npreprocess: {mode: gray, size: 24, crop_method: none}\n"
        "model: {conv_blocks: 1, filters: 8, dense_units: 0, max_epochs: 1, batch_size: 16}\n")
    assert cli.main(["train", str(isolated / "tiny.yaml"), "--data", str(synthetic_data)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["run_id"] and result["epochs"] == 1


@pytest.mark.slow
def test_scaling_out_command_on_an_rdb_storage(isolated, synthetic_data):
    """The README's many-machines command with an SQLite URL in place of PostgreSQL (same RDB
    storage), the smoke study in place of the default one, and 2 trials."""
    import optuna

    (command,) = [c for c in block_commands() if re.search(r"--storage postgresql(\+\w+)?://", c)]
    url = f"sqlite:///{isolated}/optuna.db"
    words = shlex.split(command)
    words = [url if word.startswith("postgresql") else word for word in words]
    words = [str(REPO / "sweeps" / "smoke.yaml") if word == "sweeps/default.yaml" else word for word in words]
    assert words[:2] == ["camp", "sweep"] and "--workers" in words
    environment = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's camp, in the workers too
    result = subprocess.run([sys.executable, "-m", "camp.cli", *words[1:], "--data", str(synthetic_data),
                             "--n-trials", "2", "--no-register"], cwd=isolated, env=environment,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="smoke", storage=url)
    assert len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]) >= 2
