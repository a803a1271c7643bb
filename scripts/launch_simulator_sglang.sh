#!/usr/bin/env bash
# Serve the simulation LLM with sglang behind the OpenAI-compatible /v1/chat/completions API.
#
#   scripts/launch_simulator_sglang.sh MODEL_PATH <path or hub id> [PORT 6001] [TP 1] \
#       [GPU_MEMORY 0.8] [SERVED_NAME <basename of MODEL_PATH>] [HOST 0.0.0.0]
set -euo pipefail

source "$(dirname "$0")/simulator_args.sh" "$@"

echo "sglang: serving $MODEL_PATH as '$SERVED_NAME' at http://$HOST:$PORT/v1/chat/completions" >&2
# --tp-size is sglang's own name for the flag; the short --tp only works as an argparse prefix.
exec "${PYTHON:-python}" -m sglang.launch_server \
    --model-path "$MODEL_PATH" \
    --host "$HOST" \
    --port "$PORT" \
    --tp-size "$TP" \
    --mem-fraction-static "$GPU_MEMORY" \
    --served-model-name "$SERVED_NAME"
