#!/usr/bin/env bash
# A 1.1B-parameter Llama (TinyLlama-1.1B's shape: vocab 32000, d 2048, 22 layers, 32 heads / 4 kv heads, untied
# head) in BF16, made on the fly by an independent PyTorch script (2.2 GB in one model.safetensors: past Node's 2 GiB
# readFile limit and protobuf's 2 GiB message limit), then `sppo score` and `sppo sample` on it, each with its wall
# time and peak RSS (/usr/bin/time). Nothing is downloaded or committed; the checkpoint goes to .cache/scale/.
#
#   scripts/scale/llama-1b.sh            # SPPO_SCALE_DIR=... puts the cache elsewhere
#
# Memory: `sppo score` maps the converted float32 weights (4.4 GB) once; `sppo sample` runs with
# engine.onnx.prepackWeights off here, so that it too holds one copy (on: a second, prepacked copy, ~9 GB).
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE=${SPPO_SCALE_DIR:-.cache/scale}
DIR=$CACHE/tinyllama-1.1b-bf16
if [ ! -f "$DIR/model.safetensors" ]; then
  /usr/bin/python3 scripts/scale/make_checkpoint.py --shape tinyllama-1.1b --dtype bf16 --out "$DIR"
fi
ls -l "$DIR"
measure() { /usr/bin/time -f "{\"what\": \"$1\", \"wall_s\": %e, \"peak_rss_kb\": %M}" "${@:2}"; }
measure score node bin/sppo.mjs score --model "$DIR" --prompt "Tell me about the moon" --response "The moon is a rock that circles the earth" --json
SPPO_ENGINE__ONNX__PREPACK_WEIGHTS=false measure sample node bin/sppo.mjs sample --model "$DIR" --prompt "Tell me about the moon" -k 2 --max-new-tokens 16 --seed 1 --json
