#!/usr/bin/env bash
# The GPU check as one prepared command (one H100/H200, no network; ~5 min, cut at 9 min): mpa's real stages
# (annotate, identify, level LoRA + full, evaluate, and our HF backend vs a plain `model.generate` loop) on
# Qwen2-VL-7B (teacher) / 2B (student)-shaped random-weight models built offline. See speed/gpu_check.py.
#
#   bash speed/gpu_wheels.sh          # here, once: the packages the GPU machine lacks, as wheels in .whl/ (~20 MiB)
#   bash speed/gpu.sh                 # there (device tool: carry [".whl"], timeout_s 600); args go to gpu_check.py
#
# Writes ${OUT:-runs/bench}/gpu_check.json, gpu_check.md (a README-ready table) and gpu_check.log; prints the table.
# Without .whl/ it uses the installed packages (a GPU box with `pip install -e .`).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=src:/tmp/site || exit
else
  export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
PY=${PY:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
df -h /tmp | tail -n 1
# Fail fast (seconds, not minutes) on a missing or incompatible package, before any model is built.
$PY - <<'EOF'
import importlib
for name in ("torch", "torchvision", "transformers", "trl", "peft", "accelerate", "datasets", "pyarrow", "fsspec",
             "huggingface_hub", "tokenizers", "safetensors", "pydantic", "mpa.stages.level", "mpa.stages.evaluate"):
    print(f"{name} {getattr(importlib.import_module(name), '__version__', '')}")
import torch
assert torch.cuda.is_available(), "no CUDA device"
EOF
out=${OUT:-runs/bench}
mkdir -p "$out"
timeout "${GPU_CHECK_TIMEOUT:-540}" $PY speed/gpu_check.py --out "$out" "$@" 2>&1 | tee "$out/gpu_check.log"
