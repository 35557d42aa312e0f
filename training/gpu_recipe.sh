#!/usr/bin/env bash
# GPU training recipe: one setup at the official width in one device call (at most 10 minutes on an H100/H200).
#
#   bash training/gpu_recipe.sh DATA_DIR OUT_DIR
#   MINUTES=4 STEPS=3000 SETUP=pifnet-vnir-rgb-x4 bash training/gpu_recipe.sh .gpu/data "$OUT"
#
# Two runs share the GPU at once, same data, width 64 (official), 40-px HR crops (the largest that every
# training strip of the shared scenes holds; the official 128 px needs scenes larger than ours):
#   official/  the official formulation (the network predicts the image), batch 16;
#   residual/  the network learns the correction of GLP-HS (output = GLP-HS + network, last layer
#              starting at zero), batch 8 (GLP-HS of each crop is computed on the CPU).
# OUT_DIR/<run>/ receives best.safetensors and log.jsonl; OUT_DIR/<run>.log the console output. Evaluate
# afterwards on the CPU machine (training/evaluate.py; the residual run with its prior added).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:?usage: gpu_recipe.sh DATA_DIR OUT_DIR}
out=${2:?usage: gpu_recipe.sh DATA_DIR OUT_DIR}
minutes=${MINUTES:-4}
steps=${STEPS:-3000}
setup=${SETUP:-pifnet-vnir-rgb-x4}
work=$(mktemp -d)
mkdir -p "$out"
common=(--setup "$setup" --device cuda --dim 64 --crop 40 --minutes "$minutes" --total-steps "$steps"
        --data-dir "$data" --log-every 25)
python3 -m training.train "${common[@]}" --batch-size 16 --out-dir "$work/official" >"$out/official.log" 2>&1 &
official=$!
python3 -m training.train "${common[@]}" --batch-size 8 --residual-prior glp_hs --out-dir "$work/residual" \
    >"$out/residual.log" 2>&1 &
residual=$!
status=0
wait "$official" || status=$?
wait "$residual" || status=$?
for run in official residual; do
    mkdir -p "$out/$run"
    cp "$work/$run/best.safetensors" "$work/$run/log.jsonl" "$out/$run/" 2>/dev/null || status=1
done
tail -n 3 "$out/official.log" "$out/residual.log"
exit "$status"
