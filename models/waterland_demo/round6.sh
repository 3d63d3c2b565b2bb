#!/usr/bin/env bash
# Round 6 of models/waterland_demo/README.md: the r5_base fold trainings (round 5's command; one thread, so
# deterministic), each fold's checkpoint scored on its left-out event with the round-5 gate (otsu:VV, to
# check the reproduction) and with the candidate's (otsu:VV:median5). A fold whose checkpoint exists is not
# trained again. Wall, user CPU and peak RSS of each training go to runs/loeo/round6.log.
# Usage: models/waterland_demo/round6.sh   (EVENTS="Bolivia Pakistan" to run a subset)
set -euo pipefail
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 OMP_NUM_THREADS=1
RRSIS=${RRSIS:-.venv/bin/rrsis}
export ROOT=../shared/data/sen1floods11  # the chips staged there (with Bolivia)
mkdir -p runs/loeo
for event in ${EVENTS:-Bolivia Pakistan Spain India Mekong}; do
  ckpt=runs/loeo/loeo_r5_base_$event/last.pt
  [ -f "$ckpt" ] || /usr/bin/time -f "r5_base_$event wall %e s user %U s maxrss %M kB" -a -o runs/loeo/round6.log \
    models/waterland_demo/loeo.sh r5_base "$event"
  for gate in otsu:VV otsu:VV:median5; do
    name=r6_${event}_${gate//:/_}
    "$RRSIS" eval --config configs/eval/waterland.yaml checkpoint="$ckpt" "data.val_events=[$event]" \
      data.root=$ROOT data.gate=$gate output="outputs/eval/loeo/$name" panels=0 | tee "runs/loeo/$name.txt"
  done
done
