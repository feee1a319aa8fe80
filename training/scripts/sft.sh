#!/usr/bin/env bash
# Multi-turn SFT with verl (configs/sft.yaml). Extra arguments are Hydra overrides.
#   TRAIN=sft_train.parquet NPROC=8 training/scripts/sft.sh
# CONFIG=sft_tiny NPROC=1 gives the smoke variant; VERL_PLATFORM=cpu CONFIG=sft_cpu NPROC=1 the
# CPU one (laptops, CI). Multi-node: run it on every node with
# NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT set (torchrun's rendezvous).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CONFIGS=$(cd "$HERE/../configs" && pwd)
CONFIG=${CONFIG:-sft}
NPROC=${NPROC:-8}
NNODES=${NNODES:-1}
TRAIN=${TRAIN:?set TRAIN to the SFT parquet or folder (msagent export --format verl-sft ...)}
# a folder of part-*.parquet files (msagent export) becomes a Hydra list
if [ -d "$TRAIN" ]; then TRAIN="[$(ls "$TRAIN"/part-*.parquet | paste -sd, -)]"; fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
# verl's SFT entry; on the CPU platform (VERL_PLATFORM=cpu, configs/sft_cpu.yaml) ours, which
# is verl's with a gloo process group (see msagent_training/sft.py)
ENTRY=verl.trainer.sft_trainer
if [ "${VERL_PLATFORM:-}" = cpu ]; then ENTRY=msagent_training.sft; fi
if [ "$NNODES" = 1 ]; then
  LAUNCH=(torchrun --standalone --nnodes=1 --nproc-per-node="$NPROC")
else
  LAUNCH=(torchrun --nnodes="$NNODES" --node-rank="${NODE_RANK:?}" --nproc-per-node="$NPROC"
          --master-addr="${MASTER_ADDR:?}" --master-port="${MASTER_PORT:-29500}")
fi
exec "${LAUNCH[@]}" -m "$ENTRY" \
  --config-path="$CONFIGS" --config-name="$CONFIG" \
  data.train_files="$TRAIN" trainer.nnodes="$NNODES" trainer.n_gpus_per_node="$NPROC" "$@"
