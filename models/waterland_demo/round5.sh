#!/usr/bin/env bash
# Round 5 of models/waterland_demo/README.md, in the order its protocol fixes: OMBRIA pre-training (once: it
# sees no Sen1Floods11 chip, so every fold may start from it), its OMBRIA test-split evaluation, then fold by
# fold (leave-one-event-out over every event with water) the baseline recipe r5_base and the candidate
# r5_ombria, one training at a time, niced, on one thread. A fold whose eval.txt exists is skipped, so the
# script resumes. Every step's wall, user CPU and peak RSS go to runs/loeo/round5.log.
# Usage: models/waterland_demo/round5.sh   (EVENTS="Bolivia Pakistan" to run a subset)
set -euo pipefail
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 OMP_NUM_THREADS=1
RRSIS=${RRSIS:-.venv/bin/rrsis}
export ROOT=../shared/data/sen1floods11  # loeo.sh: train and evaluate on the chips staged there (with Bolivia)
PRE=runs/waterland_ombria_pretrain/last.pt
mkdir -p runs/loeo
log=runs/loeo/round5.log
timed() {  # timed <label> <command...>: run niced, append "label wall user maxrss" to the log
  local label=$1; shift
  echo "$(date -u +%H:%M:%S) start $label" >>"$log"
  /usr/bin/time -f "$label wall %e s user %U s maxrss %M kB" -a -o "$log" nice -n 19 "$@"
  echo "$(date -u +%H:%M:%S) end $label (load $(cut -d' ' -f1-3 /proc/loadavg))" >>"$log"
}
[ -f "$PRE" ] || timed pretrain "$RRSIS" train --config configs/train/waterland_ombria_pretrain.yaml
if [ ! -f outputs/eval/r5_ombria_pretrain/metrics.json ]; then
  timed eval_pretrain_ombria_test "$RRSIS" eval --config configs/eval/waterland.yaml checkpoint="$PRE" \
    data.format=ombria data.root=../shared/data/ombria "data.val_events=[OmbriaS1-test]" \
    output=outputs/eval/r5_ombria_pretrain panels=4 | tee runs/loeo/r5_ombria_pretrain_eval.txt
fi
for event in ${EVENTS:-Bolivia Pakistan Spain India Mekong}; do
  [ -f "runs/loeo/loeo_r5_base_$event/eval.txt" ] || \
    timed "r5_base_$event" models/waterland_demo/loeo.sh r5_base "$event"
  [ -f "runs/loeo/loeo_r5_ombria_$event/eval.txt" ] || \
    timed "r5_ombria_$event" models/waterland_demo/loeo.sh r5_ombria "$event" "data.bands=[VV]" \
      data.norm=scene init_checkpoint=$PRE optim.epochs=10
done
