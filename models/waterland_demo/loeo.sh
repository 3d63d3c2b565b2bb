#!/usr/bin/env bash
# Leave-one-event-out for a water-land recipe: for each event, train on every other usable chip except the
# events in $HOLD (comma list, e.g. the test events India,Mekong while recipes are being chosen), with
# optim.monitor=last (the left-out event never trains and never selects), then `rrsis eval` the last epoch
# on that event beside the global Otsu baseline. Runs in sequence (the machine is small and shared).
# Held events sit in data.val_events, so the per-epoch val_* log lines pool them with the left-out event:
# they are logged, never used.
# ROOT=<folder> reads the chips from there in both training and evaluation (e.g. ../shared/data/sen1floods11,
# which also holds the Bolivia chip); empty = each config's own data.root.
# Usage: [HOLD=India,Mekong] [ROOT=dir] models/waterland_demo/loeo.sh <recipe-name> "<events>" [train overrides...]
#   e.g. HOLD=India,Mekong models/waterland_demo/loeo.sh cos_scene "Pakistan Spain" optim.schedule=cosine data.norm=scene
set -euo pipefail
recipe=$1; events=$2; shift 2
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # one thread: faster than two fighting other jobs for 2 cores
RRSIS=${RRSIS:-.venv/bin/rrsis}
root=(); [ -n "${ROOT:-}" ] && root=("data.root=$ROOT")
for event in $events; do
  name="loeo_${recipe}_${event}"
  "$RRSIS" train --config configs/train/waterland_demo.yaml "data.val_events=[$event${HOLD:+,$HOLD}]" \
    optim.monitor=last run_name="$name" output=runs/loeo "${root[@]}" "$@"
  "$RRSIS" eval --config configs/eval/waterland.yaml checkpoint="runs/loeo/$name/last.pt" \
    "data.val_events=[$event]" output="outputs/eval/loeo/$name" panels=0 "${root[@]}" | tee "runs/loeo/$name/eval.txt"
done
