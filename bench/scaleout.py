"""Wall time of one smoke-sized study run with 1 and with N workers on the scale-out stack: PostgreSQL
(Optuna's RDB storage) + an `mlflow server` on PostgreSQL, both started here by scripts/cluster.sh on free
loopback ports and stopped at the end. Prints one JSON object.

    .venv/bin/python bench/scaleout.py                      # 12 trials with --workers 1, 3, 3, 1: medians
    .venv/bin/python bench/scaleout.py --repeat 2           # two such rounds (1, 3, 3, 1, 1, 3, 3, 1)
    .venv/bin/python bench/scaleout.py --trials 12 --workers 1 3 --data data/clothing-small --max-per-class 60

The study is sweeps/smoke.yaml with `--n-trials` trials and no pruner (so every run does the same work;
pruning depends on the order trials finish in). Each run gets a fresh study name and a fresh decode cache,
so neither benefits from the other. Data: a synthetic image folder (tests/synthetic.py) unless --data.
Registration is off (--no-register): the measurement is the study itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--data", help="dataset folder (default: a synthetic one)")
    parser.add_argument("--max-per-class", type=int, help="data.max_per_class for --data")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds; each runs the worker counts forward then backward (ABBA, against load drift)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="camp-bench-scaleout-"))
    work.chmod(0o711)  # as root, PostgreSQL runs as the postgres user: it must reach cluster/pg
    cluster_dir = work / "cluster"
    cluster_env = {**os.environ, "CAMP_CLUSTER_DIR": str(cluster_dir), "CAMP_PG_PORT": str(_free_port()),
                   "CAMP_MLFLOW_PORT": str(_free_port()), "MLFLOW": str(Path(sys.executable).parent / "mlflow")}
    results: dict = {"trials": args.trials, "host": platform.node(), "cpus": os.cpu_count(),
                     "load_avg_start": [round(x, 2) for x in os.getloadavg()], "runs": []}
    started = time.time()
    try:
        up = subprocess.run(["bash", str(REPO / "scripts" / "cluster.sh"), "up"], env=cluster_env,
                            capture_output=True, text=True, timeout=300)
        if up.returncode != 0:
            print(up.stdout + up.stderr, file=sys.stderr)
            return 1
        results["cluster_up_s"] = round(time.time() - started, 1)
        password = (cluster_dir / "password").read_text().strip()
        storage = f"postgresql://camp:{password}@127.0.0.1:{cluster_env['CAMP_PG_PORT']}/optuna"
        if args.data:
            data = Path(args.data)
        else:
            from tests.synthetic import make_image_folder

            data = make_image_folder(work / "synthetic", splits=("train", "validation", "test"))
        spec = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
        spec["study"]["pruner"] = {"name": "none"}
        if args.max_per_class:
            spec["data"]["max_per_class"] = args.max_per_class
        order = [w for _ in range(args.repeat) for w in args.workers + args.workers[::-1]]  # ABBA rounds
        for workers in order:
            name = f"scaleout-w{workers}-{int(time.time() * 1000)}"
            spec["study"]["name"] = name
            study_file = work / f"{name}.yaml"
            study_file.write_text(yaml.safe_dump(spec, sort_keys=False))
            env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{cluster_env['CAMP_MLFLOW_PORT']}",
                   "CAMP_CACHE": str(work / f"cache-{workers}"), "CAMP_STORAGE": storage}
            command = [sys.executable, "-m", "camp.cli", "sweep", str(study_file), "--data", str(data),
                       "--n-trials", str(args.trials), "--workers", str(workers), "--no-register"]
            t0 = time.time()
            run = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=3600)
            wall = time.time() - t0
            summary = next((json.loads(line) for line in run.stdout.splitlines() if line.startswith('{"study"')), {})
            results["runs"].append({
                "workers": workers, "exit": run.returncode, "wall_s": round(wall, 1),
                "load_avg_1min_after": round(os.getloadavg()[0], 2),
                "sweep_s": summary.get("wall_seconds"), "complete": summary.get("complete"),
                "failed": summary.get("failed"), "best_value": summary.get("best_value"),
                "command": "CAMP_STORAGE=postgresql://camp:***@127.0.0.1:PORT/optuna MLFLOW_TRACKING_URI=http://127.0.0.1:PORT "
                           f"camp sweep {name}.yaml --data {data} --n-trials {args.trials} --workers {workers} --no-register"})
            if run.returncode != 0:
                print(run.stderr[-3000:], file=sys.stderr)
    finally:
        subprocess.run(["bash", str(REPO / "scripts" / "cluster.sh"), "down"], env=cluster_env,
                       capture_output=True, text=True, timeout=150)
        shutil.rmtree(work, ignore_errors=True)
    walls: dict = {}
    for run in results["runs"]:
        walls.setdefault(run["workers"], []).append(run["wall_s"])
    results["median_wall_s"] = {str(w): round(statistics.median(t), 1) for w, t in walls.items()}
    if len(walls) >= 2:
        base = statistics.median(walls[min(walls)])
        results["speedup"] = {str(w): round(base / statistics.median(t), 2) for w, t in walls.items()}
    results["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(results, indent=2))
    return 0 if all(run["exit"] == 0 for run in results["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
