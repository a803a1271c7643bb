#!/usr/bin/env bash
# REINFORCE training of a search agent. KEY VALUE arguments in any order, each optional:
#   NUM_GPUS_PER_NODE MODEL_PATH DATA_PATH TOTAL_STEPS IP SEARCH_MODE SIMULATION_LLM START_THRESHOLD
#   END_THRESHOLD SEARCH_ENGINE MAX_TURNS TOPK NNODES EXPERIMENT_NAME LOGGER ROLLOUT CORPUS_PATH RETRIEVER_URL
#   RETROSPECTIVE_CRITIC INTERACTIVE_CRITIC CRITIC_BACKEND CRITIC_LLM CRITIC_IP TURN_REWARD_COEF CRITIQUE_PROBABILITY
# Defaults come from configs/zerosearch_reinforce.yaml; anything after -- is a Hydra override.
#   bash train_reinforce.sh NUM_GPUS_PER_NODE 4 MODEL_PATH Qwen/Qwen2.5-3B DATA_PATH data/zerosearch \
#       TOTAL_STEPS 203 IP localhost SEARCH_MODE simulate_prompt SIMULATION_LLM Qwen2.5-3B-Instruct \
#       START_THRESHOLD 0 END_THRESHOLD 0.5
set -euo pipefail
exec "${PYTHON:-python}" -m zerosearch.launch reinforce "$@"
