"""camp.tracking: where MLflow's runs and artifacts go."""

from __future__ import annotations

from pathlib import Path

from camp import tracking


def test_a_sqlite_store_elsewhere_keeps_its_artifacts_beside_it(tmp_path, monkeypatch):
    import mlflow

    store, elsewhere = tmp_path / "store", tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}/mlflow.db")
    tracking.setup("where-test")
    with mlflow.start_run() as run:
        mlflow.log_text("hello", "note.txt")
    assert not (elsewhere / "mlruns").exists()
    assert [path.read_text() for path in store.rglob("note.txt")] == ["hello"]
    assert str(store / "artifacts" / "where-test") in run.info.artifact_uri


def test_masks_passwords_in_urls_and_messages():
    assert tracking.mask_url("postgresql://camp:s3cret@db:5432/optuna") == "postgresql://camp:***@db:5432/optuna"
    assert "s3cret" not in tracking.mask_secrets("could not connect to postgresql://camp:s3cret@db/optuna: refused")


def test_mask_url_hides_a_password_given_as_a_query_parameter():
    assert (tracking.mask_url("postgresql://camp@db/optuna?password=PW&sslmode=require")
            == "postgresql://camp@db/optuna?password=***&sslmode=require")
    assert tracking.mask_url("postgresql://db/optuna?sslmode=require&PASSWORD=x#y") == "postgresql://db/optuna?sslmode=require&PASSWORD=***#y"
    assert tracking.mask_secrets("failed: postgresql://u:p@h/d?sslpassword=k") == "failed: postgresql://u:***@h/d?sslpassword=***"


def test_read_commands_from_another_folder_name_the_store_and_create_nothing(tmp_path, monkeypatch, capsys):
    """`camp predict` (and report, clean) away from the repository: an error naming the absolute store path
    camp looked at, and no ./mlruns left behind."""
    from camp import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    image = tmp_path / "x.jpg"
    image.write_bytes(b"not really")
    assert cli.main(["predict", str(image)]) == 2
    err = capsys.readouterr().err
    assert f"no MLflow store at {tmp_path.resolve() / 'mlruns' / 'mlflow.db'}" in err and "MLFLOW_TRACKING_URI" in err
    assert not (tmp_path / "mlruns").exists()


def test_tensorflow_is_imported_without_its_cpp_start_up_lines():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", "from camp import tracking; tracking.quiet_tensorflow(); "
                             "import sys; print('tensorflow' in sys.modules)"], capture_output=True, text=True,
                            timeout=120, env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "0"})
    assert result.returncode == 0 and result.stdout.strip() == "True", result.stderr
    assert "oneDNN" not in result.stderr and "cudart" not in result.stderr and "absl" not in result.stderr, result.stderr


def test_the_expected_retracing_warning_is_dropped_and_others_kept(caplog):
    import tensorflow as tf

    from camp import tracking

    tracking.quiet_tensorflow()
    tracking.quiet_tensorflow()  # idempotent: one filter
    logger = tf.get_logger()
    assert sum(type(f).__name__ == "_NoRetracingWarning" for f in logger.filters) == 1
    with caplog.at_level("WARNING", logger="tensorflow"):
        logger.warning("5 out of the last 5 calls to <function f> triggered tf.function retracing. Tracing is expensive")
        logger.warning("a warning a user can act on")
    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["a warning a user can act on"]


def test_the_quiet_import_leaves_the_thread_counts_to_camp_threads():
    """quiet_tensorflow must not start TensorFlow's runtime: after it, $CAMP_THREADS still applies (a
    runtime started early silently kept TensorFlow's default threads, two per worker on two cores)."""
    import subprocess
    import sys

    script = ("from camp import runtime, tracking; tracking.setup(); runtime.configure_tensorflow(); import tensorflow as tf; "
              "print(tf.config.threading.get_intra_op_parallelism_threads(), "
              "tf.config.threading.get_inter_op_parallelism_threads())")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**__import__("os").environ, "CAMP_THREADS": "1",
                                 "MLFLOW_TRACKING_URI": "sqlite:///" + str(Path.cwd() / "threads.db")})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["1", "1"], result.stdout
    assert "cudart" not in result.stderr and "oneDNN" not in result.stderr and "AVX" not in result.stderr, result.stderr


def test_mlflow_pyfunc_notes_a_user_cannot_act_on_are_dropped(isolated):
    import logging

    tracking.setup()
    tracking.setup()  # idempotent: one filter
    logger = logging.getLogger("mlflow.pyfunc")
    assert sum(type(f).__name__ == "_NoPyfuncChatter" for f in logger.filters) == 1
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    handler, level = Keep(), logger.level
    logger.addHandler(handler)  # MLflow's loggers do not propagate to the root, where caplog listens
    logger.setLevel(logging.INFO)
    try:
        logger.warning("Passing a Python object as `python_model` causes it to be serialized using CloudPickle, ...")
        logger.info("Validating input example against model signature")
        logger.warning("a model load problem worth reading")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert seen == ["a model load problem worth reading"]
