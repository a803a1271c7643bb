#!/usr/bin/env bash
# The one-GPU check: scripts/gpu_check.py, with its output kept in ${OUT:-.}/gpu_check.log.
# Python packages the machine lacks (Hydra, OmegaConf, tensordict, ...) may come as wheels in .whl/
# beside this repository; they are installed into /tmp/site first. Extra arguments go to the
# script (--big also times a random model of Qwen2.5-0.5B's shape).
set -o pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
timeout 480 python3 scripts/gpu_check.py "$@" 2> "${OUT:-.}/gpu_check.err" | tee "${OUT:-.}/gpu_check.log"
