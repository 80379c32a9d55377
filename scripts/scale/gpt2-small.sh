#!/usr/bin/env bash
# GPT-2 small (124M) as users bring it: a checkpoint in the hub's own layout (keys without `transformer.`,
# `h.N.attn.bias` buffers, tied head, a byte-level BPE tokenizer), made on the fly by an independent PyTorch script
# (scripts/scale/make_checkpoint.py; nothing downloaded or committed; it goes to .cache/scale/). Then:
#   1. verify: sppo's onnxruntime engine (float32 and float16 weights) against PyTorch's log-probs;
#   2. `sppo score`, `sppo sample`, `sppo export` (the exported file run in a fresh session by verify-export.ts);
#   3. `sppo run`: one embedded SPPO iteration (16 prompts, K = 4, 32 new tokens) with the default oracle
#      (bench/scale/run-gpt2-small.yaml).
# Each command prints its wall time and peak RSS (/usr/bin/time).
#
#   scripts/scale/gpt2-small.sh          # SPPO_SCALE_DIR=... puts the cache elsewhere
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE=${SPPO_SCALE_DIR:-.cache/scale}
DIR=$CACHE/gpt2-small
if [ ! -f "$DIR/reference.json" ]; then
  /usr/bin/python3 scripts/scale/make_checkpoint.py --shape gpt2-small --out "$DIR" --reference
fi
measure() { /usr/bin/time -f "{\"what\": \"$1\", \"wall_s\": %e, \"peak_rss_kb\": %M}" "${@:2}"; }
measure verify node --import tsx scripts/scale/verify.ts "$DIR" --engines onnx,onnx-float16
measure score node bin/sppo.mjs score --model "$DIR" --prompt "Tell me about the moon" --response "The moon is a rock that circles the earth" --json
measure sample node bin/sppo.mjs sample --model "$DIR" --prompt "Tell me about the moon" -k 4 --max-new-tokens 32 --seed 1 --json
measure export node bin/sppo.mjs export --model "$DIR" --out "$CACHE/gpt2-small-onnx/model.onnx" --external-data --json
measure verify-export node --import tsx scripts/scale/verify-export.ts "$CACHE/gpt2-small-onnx/model.onnx" "$DIR"
# The run's config names .cache/scale/gpt2-small: with SPPO_SCALE_DIR elsewhere, point both modelDirs at $DIR.
SPPO_GENERATOR__MODEL_DIR=$DIR SPPO_OPTIMIZER__MODEL_DIR=$DIR measure run node bin/sppo.mjs run --config bench/scale/run-gpt2-small.yaml --out "$CACHE/gpt2-small-run"
