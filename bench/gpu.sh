#!/usr/bin/env bash
# The GPU check, prepared to run as one command on a GPU machine (within about 5 minutes on one H100/H200):
#   bash bench/gpu.sh [LARGE_MODEL]
# trains on the default model (one wide transcoder; a full 30-layer set) and, if given and loadable offline, on a
# larger model's middle layer; prints tokens/s and peak GPU memory per run. Then, with 2+ GPUs, the same wide run
# under torchrun data parallelism across all of them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
LARGE=${1:-${LARGE_MODEL:-}}
timeout 270 "$PY" bench/gpu.py --tokens 4000000 ${LARGE:+--large "$LARGE" --large-tokens 500000}
NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "$NGPU" -ge 2 ]; then
  OUTDIR=$(mktemp -d)
  start=$(date +%s.%N)
  timeout 120 "$PY" -m torch.distributed.run --standalone --nproc-per-node "$NGPU" -m transcoders train \
    --device cuda --layers 6 --width 18432 --tokens 4000000 --batch-size 4096 --out "$OUTDIR/dp" --quiet
  end=$(date +%s.%N)
  echo "torchrun x$NGPU, layer 6, width 18432: $(echo "4000000 / ($end - $start)" | bc) tokens/s (wall, loading included)"
fi
