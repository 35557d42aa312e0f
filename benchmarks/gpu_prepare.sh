#!/usr/bin/env bash
# Prepare the GPU check on this (CPU) machine: build the carry folder and print the commands to run there.
#
#   bash benchmarks/gpu_prepare.sh [CARRY_DIR]        # default .gpu (git-ignored)
#
# The GPU machine (shared/FACTS.md, device KINDS.md) has Python 3.12 with CUDA torch, triton, torchvision,
# safetensors, einops, huggingface_hub, numpy, pytest, hypothesis, matplotlib and tqdm, and no network.
# It lacks rasterio and mamba-ssm: neither is needed (the check and the training recipe never read a
# raster; mamba-ssm builds only from source there, about 3 minutes of the 15, so the check compares the
# Triton scan with the torch scan instead). What it lacks that the check needs is therefore only data:
#   CARRY_DIR/commit   the commit under test (the device copy has no .git)
#   CARRY_DIR/data/    the permissive training scenes, spectra and SRFs of ../shared/data, for
#                      training/gpu_recipe.sh (left out, with a warning, when ../shared is absent)
# The folder must stay under 30 MB (it travels with every call).
set -euo pipefail
cd "$(dirname "$0")/.."
carry=${1:-.gpu}
shared=${SHARED_DIR:-../shared}
limit_mb=30

rm -rf "$carry"
mkdir -p "$carry"
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then commit="$commit+dirty"; fi
echo "$commit" > "$carry/commit"

if [ -d "$shared/data" ]; then
    scenes=$(python -c "from training.data import PERMISSIVE_SCENES; print(' '.join(PERMISSIVE_SCENES))")
    mkdir -p "$carry/data"
    for name in $scenes spectra srf; do
        mkdir -p "$carry/data/$name"
        # cube, mask, meta and tables: no previews
        find "$shared/data/$name" -maxdepth 1 -type f \( -name '*.npy' -o -name '*.npz' -o -name '*.json' \
            -o -name '*.csv' -o -name '*.md' -o -name 'LICENSE*' \) -exec cp {} "$carry/data/$name/" \;
    done
else
    echo "warning: $shared/data not found: the carry folder holds no training data (the check runs without it)" >&2
fi

size_kb=$(du -sk "$carry" | cut -f1)
if [ "$size_kb" -gt $((limit_mb * 1024)) ]; then
    echo "error: $carry is $((size_kb / 1024)) MB, over the $limit_mb MB limit" >&2
    exit 1
fi

cat <<MSG
Carry folder: $carry ($((size_kb / 1024)) MB, commit $commit). Carry it with every call: carry=["$carry"].
1. The check (one call, at most 8 minutes; results in \$OUT as it goes):
   set -o pipefail; export PYTHONUNBUFFERED=1 GPU_CHECK_COMMIT=\$(cat $carry/commit); python3 benchmarks/gpu_check.py --out \$OUT 2>&1 | tee \$OUT/gpu_check.log
2. Then the training recipe (next call, while the machine is warm):
   set -o pipefail; bash training/gpu_recipe.sh $carry/data \$OUT 2>&1 | tee \$OUT/recipe.log
Afterwards copy \$OUT/gpu_check.json to benchmarks/results/gpu_check_cuda_<date>.json and the figures to BENCHMARKS.md.
MSG
