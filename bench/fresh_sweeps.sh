#!/usr/bin/env bash
# `make sweep` on fresh clones of this repository's HEAD, one seed after another (never two at once),
# then bench/champion.py on each: one JSON line per seed in bench/results/fresh_sweeps.jsonl.
#   bench/fresh_sweeps.sh 42 43 44
# Each clone sits beside this checkout (so ../shared resolves as in a real clone) and is kept for
# inspection; remove the camp-fresh-* folders afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
out="$repo/bench/results"; mkdir -p "$out"
commit="$(git rev-parse --short HEAD)"
for seed in "$@"; do
  clone="$(dirname "$repo")/camp-fresh-$commit-s$seed"
  rm -rf "$clone"; git clone -q "$repo" "$clone"
  git -C "$clone" checkout -q "$commit"  # every seed runs the commit the script started on, not a later HEAD
  echo "== seed $seed: $clone ($(date -u +%H:%M:%S))"
  start=$(date +%s)
  (cd "$clone" && make sweep SEED="$seed") > "$out/sweep-$commit-s$seed.log" 2>&1 || echo "make sweep failed (seed $seed): see $out/sweep-$commit-s$seed.log"
  end=$(date +%s)
  (cd "$clone" && MLFLOW_TRACKING_URI=sqlite:///mlruns/mlflow.db .venv/bin/python bench/champion.py 2>/dev/null | tail -1 \
     | .venv/bin/python -c "import json,sys; r=json.load(sys.stdin); r.update(seed=$seed, commit='$commit', make_sweep_seconds=$end-$start); print(json.dumps(r))") \
     >> "$out/fresh_sweeps.jsonl" || echo "bench/champion.py failed (seed $seed)"
  tail -1 "$out/fresh_sweeps.jsonl" | cut -c1-400
done
