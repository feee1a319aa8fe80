#!/usr/bin/env bash
# Multi-turn SFT with verl (configs/sft.yaml). Extra arguments are Hydra overrides.
#   TRAIN=sft_train.parquet NPROC=8 training/scripts/sft.sh
# CONFIG=sft_tiny NPROC=1 gives the smoke variant. Multi-node: run it on every node with
# NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT set (torchrun's rendezvous).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CONFIGS=$(cd "$HERE/../configs" && pwd)
CONFIG=${CONFIG:-sft}
NPROC=${NPROC:-8}
NNODES=${NNODES:-1}
TRAIN=${TRAIN:?set TRAIN to the SFT parquet (python -m msagent_training.data sft ...)}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if [ "$NNODES" = 1 ]; then
  LAUNCH=(torchrun --standalone --nnodes=1 --nproc-per-node="$NPROC")
else
  LAUNCH=(torchrun --nnodes="$NNODES" --node-rank="${NODE_RANK:?}" --nproc-per-node="$NPROC"
          --master-addr="${MASTER_ADDR:?}" --master-port="${MASTER_PORT:-29500}")
fi
exec "${LAUNCH[@]}" -m verl.trainer.sft_trainer \
  --config-path="$CONFIGS" --config-name="$CONFIG" \
  data.train_files="$TRAIN" trainer.nnodes="$NNODES" trainer.n_gpus_per_node="$NPROC" "$@"
