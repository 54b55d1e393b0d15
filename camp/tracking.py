"""MLflow set-up shared by every command: the store, the experiment, and run provenance."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
DEFAULT_EXPERIMENT = "camp"


def tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI when set, else a SQLite store under ./mlruns (artifacts beside it)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


class _DropMessages(logging.Filter):
    """Drops records whose message contains any of `fragments`."""

    fragments: tuple[str, ...] = ()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


class _NoPyfuncChatter(_DropMessages):
    """MLflow's notes when camp logs its pyfunc: that a Python object is pickled (camp's own class, loaded
    only from camp's own store) and that the input example is being checked. Neither is something a
    user of `make sweep` can act on."""

    fragments = ("serialized using CloudPickle", "Validating input example")


class _NoRetracingWarning(_DropMessages):
    """Keras's predict function is traced once per model, and a sweep builds one model per trial: TF then
    warns about "retracing", which is expected here and nothing a user can act on."""

    fragments = ("triggered tf.function retracing",)


def _filter_once(logger: logging.Logger, kind: type[logging.Filter]) -> None:
    """Add a `kind` filter to `logger` unless it has one (setup runs once per command, tests run it often)."""
    if not any(isinstance(existing, kind) for existing in logger.filters):
        logger.addFilter(kind())


@contextlib.contextmanager
def stderr_silenced():
    """Point this process's stderr (file descriptor 2, which C++ libraries write to) at /dev/null."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def quiet_tensorflow() -> None:
    """Import TensorFlow with stderr silenced. Since 2.19 its C++ side prints oneDNN and CUDA-stub INFO
    lines at import whatever TF_CPP_MIN_LOG_LEVEL says (tensorflow#100442), one set per worker process,
    and they bury camp's own lines. A failed import still raises, and its Python error is shown once
    stderr is back. The runtime is not started here: `camp.runtime.configure_tensorflow` must still be able
    to set the thread counts ($CAMP_THREADS), which TensorFlow refuses once it has run an op."""
    if "tensorflow" not in sys.modules:
        with stderr_silenced():
            try:
                import tensorflow  # noqa: F401
            except ImportError:
                pass  # imported again below, with stderr back, so the user sees why
    import tensorflow

    _filter_once(tensorflow.get_logger(), _NoRetracingWarning)


def setup(experiment: str = DEFAULT_EXPERIMENT, create: bool = True) -> str:
    """Point MLflow at camp's store and experiment; returns the experiment id. With `create=False` (commands
    that only read: predict, report, clean) a missing SQLite store is an error naming where camp looked,
    and nothing is created as a side effect."""
    import mlflow

    quiet_tensorflow()

    # MLflow's system-metrics monitor says "Started monitoring" and "Skip logging GPU metrics" at every
    # run's start: nothing a user acts on, and one pair per trial buries camp's own lines
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
    _filter_once(logging.getLogger("mlflow.pyfunc"), _NoPyfuncChatter)
    uri = tracking_uri()
    artifact_location = None  # the default store: MLflow's ./mlruns/<experiment id>/, beside mlflow.db
    if uri.startswith("sqlite:///"):
        database = Path(uri[len("sqlite:///"):])
        if not create and not database.is_file():
            raise ValueError(f"no MLflow store at {database.resolve()} ({'$MLFLOW_TRACKING_URI' if uri != DEFAULT_TRACKING_URI else 'the default'} "
                             f"{uri}, relative to {Path.cwd()}): run camp from the folder that holds mlruns/ "
                             f"(the repository), or set MLFLOW_TRACKING_URI=sqlite:///{Path.cwd().resolve() / 'mlruns' / 'mlflow.db'}"
                             " with the store's absolute path")
        database.parent.mkdir(parents=True, exist_ok=True)
        if uri != DEFAULT_TRACKING_URI:  # another SQLite store keeps its artifacts beside it, not in ./mlruns
            artifact_location = str(database.parent.resolve() / "artifacts" / experiment)
    mlflow.set_tracking_uri(uri)
    existing = mlflow.get_experiment_by_name(experiment)
    if existing is None:
        experiment_id = mlflow.create_experiment(experiment, artifact_location=artifact_location)
    else:
        experiment_id = existing.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def git_commit() -> str:
    """The commit of the camp checkout (suffixed `-dirty` with uncommitted changes), or `unknown`."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


_CREDENTIALS = re.compile(r"(?<=://)([^:/@\s]*):([^@\s]+)@")
# libpq and SQLAlchemy also take the password as a query parameter (`?password=...`, `&sslpassword=...`)
_QUERY_PASSWORD = re.compile(r"(?i)([?&](?:ssl)?password=)[^&\s#]*")


def mask_url(url: str | None) -> str | None:
    """A storage URL with its password replaced by ***, for anything printed or logged: the userinfo
    form (`user:PW@host`) and the query form (`?password=PW`)."""
    if url is None:
        return None
    return mask_secrets(url)


def mask_secrets(text: str) -> str:
    """Any `scheme://user:password@` or `password=` query inside a longer text (an error message) masked."""
    return _QUERY_PASSWORD.sub(r"\1***", _CREDENTIALS.sub(r"\1:***@", str(text)))
