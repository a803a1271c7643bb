#!/usr/bin/env bash
# Evaluate a search agent with greedy multi-turn rollouts. KEY VALUE arguments in any order:
#   MODEL_PATH (model folder or checkpoint global_step_N)  DATA_PATH (test parquet or its folder)
#   OUT_DIR  SEARCH_ENGINE (google | wiki | corpus; default corpus)  BATCH_SIZE  MAX_TURNS  TOPK
#   CORPUS_PATH  RETRIEVER_URL
# Anything after -- is a Hydra override of the zerosearch config.
#   bash scripts/eval.sh MODEL_PATH checkpoints/.../global_step_203 DATA_PATH data/zerosearch \
#       OUT_DIR eval_out SEARCH_ENGINE wiki RETRIEVER_URL http://127.0.0.1:8000/retrieve
set -euo pipefail
exec "${PYTHON:-python}" -m zerosearch.launch eval "$@"
