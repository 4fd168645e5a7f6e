#!/bin/bash
# Does the calibrated false-alarm rate hold with today's default map (C beside the blur)? docs/alarms.md.
#   bash tools/experiments/alarm_check.sh TEXTURE PROTOCOL_SEED FALSE_REGIONS_PER_MP FLAGGED_SHARE CALIB_IMAGES
# The visible protocol with 600 good test images, a short configs/demo.yaml model with its comparator, then
# alarm_holdout.py: calibrate on CALIB_IMAGES of the good test images, count on the rest, 5 random splits.
# FALSE_REGIONS_PER_MP may be "" (the share of flagged images only). Every step is the product's CLI; a rerun
# reuses what is there (runs/alarm-check/TEXTURE).
set -euo pipefail
cd "$(dirname "$0")/../.."
tex=$1; seed=$2; fr=$3; fs=$4; calib=$5
M=runs/alarm-check/$tex; P=$M/data
[ -d "$P" ] || python -m tools.protocols visible --out "$P" --texture "$tex" --epsilon 0.1 --n-test-good 600 --n-test-defect 4 --seed "$seed"
[ -d "$M/shards" ] || nsgan shards --normal "$P/train/good" --abnormal "$P/train/defect" --abnormal-masks "$P/ground_truth_train/defect" \
  --tile 32 --stride 16 --channels 1 --seed 0 --out "$M/shards"
[ -f "$M/run/model.safetensors" ] || nsgan train --config configs/demo.yaml data.normal="$M/shards/normal" data.abnormal="$M/shards/abnormal" \
  run_dir="$M/run" train.display=false train.log_with=none encoder.kimg=0 schedule.stable_kimg=0.5 schedule.fade_kimg=0.5 schedule.total_kimg=1.5
args=(--model "$M/run/model.safetensors" --normal "$P/test/good" --out "$M/holdout" --splits 5 --calib-images "$calib" --flagged-share "$fs")
[ -n "$fr" ] && args+=(--false-regions-per-mp "$fr")
python tools/experiments/alarm_holdout.py "${args[@]}"
