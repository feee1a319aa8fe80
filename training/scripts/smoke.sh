#!/usr/bin/env bash
# Smoke runs on one GPU: a tiny random Qwen3-VL, LiteMedSAM, a few synthetic cases; SFT for 2
# steps, then GRPO for 2 steps. Checks the wiring end to end (it learns nothing).
#   OUT=/tmp/msagent-smoke training/scripts/smoke.sh
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${OUT:-/tmp/msagent-smoke}
MODEL=/tmp/msagent-tiny-qwen3vl
mkdir -p "$OUT"
python3 -m msagent_training.tiny "$MODEL"
python3 -m msagent_training.smoke_data "$OUT"
CONFIG=sft_tiny NPROC=1 TRAIN="$OUT/sft.parquet" "$HERE/sft.sh" model.path="$MODEL" \
  trainer.default_local_dir="$OUT/sft"
CONFIG=grpo_tiny BACKBONE=litemedsam TRAIN="$OUT/rl.parquet" "$HERE/grpo.sh" \
  actor_rollout_ref.model.path="$MODEL" trainer.default_local_dir="$OUT/grpo"
