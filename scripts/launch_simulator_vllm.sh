#!/usr/bin/env bash
# Serve the simulation (or critic) LLM with vLLM behind the OpenAI-compatible API
# (/v1/chat/completions, /v1/completions).
#
#   scripts/launch_simulator_vllm.sh MODEL_PATH <path or hub id> [PORT 6001] [TP 1] \
#       [GPU_MEMORY 0.8] [SERVED_NAME <basename of MODEL_PATH>] [HOST 0.0.0.0] \
#       [DEVICE auto|cuda|cpu] [KV_CACHE 1G] [MAX_MODEL_LEN <the model's>]
#
# DEVICE auto is cuda when nvidia-smi finds a GPU. On CPU (vLLM's CPU build) the server computes in
# float32 without CUDA graphs and takes KV_CACHE bytes of host memory for its cache instead of a
# GPU_MEMORY share. The server is started as a Python module: the CPU build's `vllm` command fails.
set -euo pipefail

EXTRA_KEYS="DEVICE KV_CACHE MAX_MODEL_LEN"
EXTRA_USAGE="[DEVICE auto|cuda|cpu] [KV_CACHE 1G] [MAX_MODEL_LEN n]"
DEVICE=auto KV_CACHE=1G MAX_MODEL_LEN=""
source "$(dirname "$0")/simulator_args.sh" "$@"

case "$DEVICE" in
    auto) if command -v nvidia-smi > /dev/null && nvidia-smi -L > /dev/null 2>&1; then DEVICE=cuda; else DEVICE=cpu; fi ;;
    cuda|cpu) ;;
    *) usage "DEVICE must be auto, cuda or cpu, got '$DEVICE'" ;;
esac
[[ "$KV_CACHE" =~ ^[0-9]+[KMG]?$ ]] || usage "KV_CACHE must be a size such as 512M or 2G, got '$KV_CACHE'"
[[ -z "$MAX_MODEL_LEN" || "$MAX_MODEL_LEN" =~ ^[1-9][0-9]*$ ]] || usage "MAX_MODEL_LEN must be a positive integer, got '$MAX_MODEL_LEN'"

args=(--model "$MODEL_PATH" --host "$HOST" --port "$PORT" --tensor-parallel-size "$TP" --served-model-name "$SERVED_NAME")
if [ "$DEVICE" = cuda ]; then
    args+=(--gpu-memory-utilization "$GPU_MEMORY")
else
    args+=(--dtype float32 --enforce-eager --kv-cache-memory-bytes "$KV_CACHE")
fi
[ -z "$MAX_MODEL_LEN" ] || args+=(--max-model-len "$MAX_MODEL_LEN")

echo "vllm ($DEVICE): serving $MODEL_PATH as '$SERVED_NAME' at http://$HOST:$PORT/v1/chat/completions" >&2
exec "${PYTHON:-python}" -m vllm.entrypoints.openai.api_server "${args[@]}"
