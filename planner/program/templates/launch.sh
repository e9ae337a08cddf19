#!/usr/bin/env bash
# Launch train.py for the plan: @SUMMARY@
#
# One node:    bash launch.sh [train.py options, e.g. --steps 100]
# Many nodes:  on node i of N:  NNODES=N NODE_RANK=i MASTER_ADDR=<node 0's address> bash launch.sh
# Slurm:       sbatch slurm.sbatch
# No GPUs:     bash launch.sh --cpu   (gloo, one process per planned rank on this machine)
# torchrun restarts failed workers up to MAX_RESTARTS times; train.py then resumes from the latest
# complete checkpoint.
set -euo pipefail
cd "$(dirname "$0")"
WORLD=@WORLD@
NNODES=${NNODES:-@NODES@}
NODE_RANK=${NODE_RANK:-0}
NPROC_PER_NODE=${NPROC_PER_NODE:-$(( WORLD / NNODES ))}
MASTER_PORT=${MASTER_PORT:-29500}
MAX_RESTARTS=${MAX_RESTARTS:-3}
if command -v torchrun >/dev/null; then RUN=(torchrun); else RUN=("${PYTHON:-python3}" -m torch.distributed.run); fi
if [ $(( NNODES * NPROC_PER_NODE )) -ne "$WORLD" ]; then
  echo "launch.sh: NNODES x NPROC_PER_NODE = $NNODES x $NPROC_PER_NODE, but the plan has $WORLD ranks" >&2
  exit 2
fi
if [ "$NNODES" -eq 1 ]; then
  exec "${RUN[@]}" --standalone --nnodes 1 --nproc-per-node "$NPROC_PER_NODE" \
    --max-restarts "$MAX_RESTARTS" train.py "$@"
fi
if [ -z "${MASTER_ADDR:-}" ]; then
  echo "launch.sh: the plan spans $NNODES nodes; set MASTER_ADDR (node 0's address) and NODE_RANK on each" >&2
  exit 2
fi
exec "${RUN[@]}" --nnodes "$NNODES" --node-rank "$NODE_RANK" --nproc-per-node "$NPROC_PER_NODE" \
  --rdzv-backend c10d --rdzv-endpoint "$MASTER_ADDR:$MASTER_PORT" --rdzv-id "${RDZV_ID:-planner}" \
  --max-restarts "$MAX_RESTARTS" train.py "$@"
