"""Local servers for tests: a free port on 127.0.0.1, `make TARGET` in its own process group, a
bounded wait until it answers, and a stop by PID that always runs (TERM, wait, KILL what is left)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
ARTIFACTS = REPO / "test-artifacts"  # git-ignored: screenshots and timings for the CI log


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def make_command(target: str, **variables: str) -> list[str]:
    """`make TARGET` in the repository with this interpreter's bin/ (so the tools are the tested ones)
    and without re-running `make setup` (-o: the install stamp counts as up to date)."""
    return ["make", "-s", "-C", str(REPO), "-o", ".venv/.installed", target, f"BIN={Path(sys.executable).parent}",
            *[f"{name}={value}" for name, value in variables.items()]]


def clean_env(**overrides: str) -> dict:
    """This process's environment without an outer make's flags (`make test` runs the tests)."""
    environment = {key: value for key, value in os.environ.items() if key not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    return {**environment, **overrides}


def http(url: str, body: dict | None = None, timeout: float = 60):
    """GET (or POST JSON) and return (status, decoded JSON or text)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    text = raw.decode("utf-8", "replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def _tail(path: Path, size: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return ""


def wait_until_answering(process: subprocess.Popen, url: str, log: Path, deadline_s: float) -> float:
    """Poll `url` until it answers 200; returns the seconds it took. Fails if the process exits first."""
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode} before answering {url}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return time.monotonic() - start
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"no answer from {url} within {deadline_s:.0f} s:\n{_tail(log)}")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop(process: subprocess.Popen, grace_s: float = 10) -> None:
    """Stop the server's whole process group (make, mlflow, uvicorn, its job consumers) by its PID:
    SIGTERM, up to `grace_s` for the group to exit, then SIGKILL whatever is left."""
    pgid = process.pid  # start_new_session=True: the group id is the leader's PID
    if _group_alive(pgid):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    while _group_alive(pgid) and time.monotonic() < deadline:  # children can outlive the leader
        time.sleep(0.2)
    if _group_alive(pgid):
        os.killpg(pgid, signal.SIGKILL)
    process.wait(timeout=30)


@contextmanager
def serving(command: list[str], ready_url: str, log: Path, env: dict | None = None, deadline_s: float = 240):
    """Start `command` in a new process group, wait until `ready_url` answers, yield the process, stop it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, start_new_session=True)
        try:
            process.startup_seconds = wait_until_answering(process, ready_url, log, deadline_s)
            yield process
        finally:
            stop(process)
