"""The sweep's worker processes on this machine: started with the same command line (`--worker-of` the
parent run), waited for, and interrupted (then, past a deadline, killed) on Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

from camp.storage import STORAGE_ENV

STOP_SECONDS = 60  # how long an interrupted sweep waits for its worker processes before killing them


def start_workers(args, parent_run_id: str, plan) -> list[subprocess.Popen]:
    """Worker processes on this machine. The storage URL travels in $CAMP_STORAGE, not on the command line
    (where `ps` would show its password)."""
    children = []
    for index in range(1, args.workers):
        command = [sys.executable, "-m", "camp.cli", "sweep", args.config, "--worker-of", parent_run_id,
                   "--n-trials", str(plan.n_trials), "--workers", str(args.workers)]
        if plan.timeout:
            command += ["--timeout", str(plan.timeout)]
        if plan.data_path:
            command += ["--data", plan.data_path]
        if getattr(args, "seed", None) is not None:
            command += ["--seed", str(args.seed)]
        if getattr(args, "queued_only", False):
            command += ["--queued-only"]
        environment = {**os.environ, "CAMP_WORKER_INDEX": str(index)}
        environment.pop(STORAGE_ENV, None)
        if plan.storage_url:
            environment[STORAGE_ENV] = plan.storage_url
        children.append(subprocess.Popen(command, env=environment))
    return children


def wait_workers(children: list[subprocess.Popen]) -> set[int]:
    """Wait for the worker processes; warn about (and return the pids of) those that died."""
    died = set()
    for child in children:
        code = child.wait()
        if code != 0:
            died.add(child.pid)
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
            print(f"camp: warning: worker process {child.pid} {how}; a trial it left running is failed, its "
                  "MLflow run killed and its parameters re-queued", file=sys.stderr, flush=True)
    return died


def stop_workers(children: list[subprocess.Popen]) -> set[int]:
    """Interrupt the worker processes and wait (bounded) for them to fail their trials; returns the pids
    that had to be killed."""
    for child in children:
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGINT)
    deadline, killed = time.time() + STOP_SECONDS, set()
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            killed.add(child.pid)
    return killed
