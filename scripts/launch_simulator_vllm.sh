#!/usr/bin/env bash
# Serve the simulation LLM with vLLM behind the OpenAI-compatible /v1/chat/completions API.
#
#   scripts/launch_simulator_vllm.sh MODEL_PATH <path or hub id> [PORT 6001] [TP 1] \
#       [GPU_MEMORY 0.8] [SERVED_NAME <basename of MODEL_PATH>] [HOST 0.0.0.0]
set -euo pipefail

source "$(dirname "$0")/simulator_args.sh" "$@"

echo "vllm: serving $MODEL_PATH as '$SERVED_NAME' at http://$HOST:$PORT/v1/chat/completions" >&2
exec vllm serve "$MODEL_PATH" \
    --host "$HOST" \
    --port "$PORT" \
    --tensor-parallel-size "$TP" \
    --gpu-memory-utilization "$GPU_MEMORY" \
    --served-model-name "$SERVED_NAME"
