#!/usr/bin/env bash
# GRPO of the MedSAM-Agent policy with verl (configs/grpo.yaml). Extra arguments are Hydra
# overrides, e.g. actor_rollout_ref.model.path=/ckpt/sft/huggingface trainer.nnodes=2.
#   TRAIN=rl_train.parquet VAL=rl_val.parquet BACKBONE=medsam2 training/scripts/grpo.sh
# BACKBONE: medsam2 | imisnet | remote (then MSAGENT_REMOTE_URL) | litemedsam.
# CONFIG=grpo_tiny gives the smoke variant (tiny model, 1 GPU, 2 steps); VERL_PLATFORM=cpu
# CONFIG=grpo_cpu BACKBONE=litemedsam_cpu the CPU run (rollout engine hf, training/README.md).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CONFIGS=$(cd "$HERE/../configs" && pwd)
CONFIG=${CONFIG:-grpo}
BACKBONE=${BACKBONE:-medsam2}
TRAIN=${TRAIN:?set TRAIN to the RL parquet or folder (msagent export --format verl-rl ...)}
VAL=${VAL:-$TRAIN}
# a folder of part-*.parquet files (msagent export) becomes a Hydra list
if [ -d "$TRAIN" ]; then TRAIN="[$(ls "$TRAIN"/part-*.parquet | paste -sd, -)]"; fi
if [ -d "$VAL" ]; then VAL="[$(ls "$VAL"/part-*.parquet | paste -sd, -)]"; fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
# verl's main_ppo, with the reward breakdown in each step's metrics (msagent_training/grpo.py)
exec python3 -m msagent_training.grpo \
  --config-path="$CONFIGS" --config-name="$CONFIG" \
  data.train_files="$TRAIN" data.val_files="$VAL" \
  actor_rollout_ref.rollout.multi_turn.tool_config_path="$CONFIGS/tools/$BACKBONE.yaml" \
  actor_rollout_ref.rollout.agent.agent_loop_config_path="$CONFIGS/agent_loop.yaml" \
  "$@"
