#!/usr/bin/env bash
# Download, here, the wheels `speed/gpu.sh` installs on the GPU machine (Python 3.12, no network; see
# ../shared/GPU_MACHINE.md for what is already there), into .whl/ (git-ignored via .git/info/exclude).
# Run once before calling the device tool with carry [".whl"]. About 21 MiB.
#
# What and why (read from each wheel's METADATA Requires-Dist against the machine's package list):
#   transformers 5.24.0, trl 1.16.0 (absent there), peft 0.21.2 (the version we test with 5.24; theirs is unknown)
#   huggingface-hub 1.33.0   transformers 5.24 needs >=1.31 (theirs satisfies 5.17's >=1.5); the newest 1.x,
#                            whose deps (httpx<1, click, hf-xet) are there; we test with 2.4, which needs httpx2
#   click 8.5.1              hub 1.33 needs >=8.4.2
#   datasets 5.2.0 + dill 0.4.1, multiprocess 0.70.19, fsspec 2026.9.0   trl needs datasets>=4.7 (absent there);
#                            datasets pins dill<0.4.2, multiprocess<0.70.20, fsspec<=2026.9.0
#   pydantic 2.14.4 + pydantic-core 2.50.5, annotated-types 0.8.0, typing-inspection 0.4.5, typing-extensions 4.16.0
#                            mpa's config (absent there)
# Already there, new enough: accelerate 1.15, tokenizers 0.23.2, safetensors and regex (transformers 5.17 needs the
# same minimums), torch 2.11 + torchvision 0.26, numpy, pandas, pyarrow (datasets 5.2 wants >=24: checked by gpu.sh),
# xxhash, psutil, jinja2, pyyaml, tqdm, pillow, httpx, typer.
set -euo pipefail
cd "$(dirname "$0")/.."
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")" && touch "$exclude"
grep -qxF "/.whl/" "$exclude" || echo "/.whl/" >> "$exclude"
rm -rf .whl && mkdir -p .whl
PY=${PY:-python3}
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl \
    transformers==5.24.0 trl==1.16.0 peft==0.21.2 huggingface-hub==1.33.0 click==8.5.1 \
    datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 fsspec==2026.9.0 \
    pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0
ls -1 .whl
du -sh .whl
