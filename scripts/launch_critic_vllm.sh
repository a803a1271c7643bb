#!/usr/bin/env bash
# Serve the critic LLM with vLLM: launch_simulator_vllm.sh with the critic's port, 6002 (CRITIC_IP's
# default), unless PORT is given. Same keys:
#
#   scripts/launch_critic_vllm.sh MODEL_PATH <path or hub id> [PORT 6002] [TP 1] [GPU_MEMORY 0.8] \
#       [SERVED_NAME <basename of MODEL_PATH>] [HOST 0.0.0.0] [DEVICE auto|cuda|cpu] [KV_CACHE 1G] [MAX_MODEL_LEN n]
set -euo pipefail
exec bash "$(dirname "$0")/launch_simulator_vllm.sh" PORT 6002 "$@"
