#!/usr/bin/env bash
# Serve the critic LLM with sglang: launch_simulator_sglang.sh with the critic's port, 6002
# (CRITIC_IP's default), unless PORT is given. Same keys.
set -euo pipefail
exec bash "$(dirname "$0")/launch_simulator_sglang.sh" PORT 6002 "$@"
