"""Search-agent training: the engine's PPO trainer with the multi-turn search rollout and QA reward.

    python -m zerosearch.train --config-name zerosearch_grpo key=value ...

Recipes live in ``configs/``; ``train_grpo.sh`` / ``train_ppo.sh`` / ``train_reinforce.sh`` take
ZeroSearch's KEY VALUE arguments and call this.
"""

import os

import hydra
import pandas as pd
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from verl.trainer.main_ppo import expand_files, run_ppo, to_typed
from zerosearch.config import ZeroSearchConfig, register_schema
from zerosearch.data.fields import row_golden_answers, row_question
from zerosearch.reward import METRICS, normalize_answer
from zerosearch.search import BACKENDS, EVAL_ENGINES, SIMULATED_MODES
from zerosearch.search.google import ZEROSEARCH_KEY_ENV, serpapi_key

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")

register_schema()


def load_config(config_name: str, overrides: list[str] | None = None, schema: type = ZeroSearchConfig):
    """``configs/<config_name>.yaml`` after Hydra overrides, typed as ``schema``."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return to_typed(compose(config_name, overrides=overrides or []), schema)


def check_search_config(config: ZeroSearchConfig, validates: bool = True) -> None:
    """Refuses, before any model loads, what the search agent would only trip over mid-run."""
    search, agent = config.search, config.agent
    if search.mode not in BACKENDS:
        raise ValueError(f"search.mode={search.mode!r} (SEARCH_MODE): use one of {list(BACKENDS)}")
    if search.engine not in EVAL_ENGINES:
        raise ValueError(f"search.engine={search.engine!r} (SEARCH_ENGINE): use one of {list(EVAL_ENGINES)}")
    if agent.max_turns < 0 or search.topk < 1 or agent.max_obs_length < 1:
        raise ValueError(
            f"agent.max_turns={agent.max_turns} must be >= 0, search.topk={search.topk} >= 1 and "
            f"agent.max_obs_length={agent.max_obs_length} >= 1"
        )
    if agent.reward_metric not in METRICS:
        raise ValueError(f"agent.reward_metric={agent.reward_metric!r}: use one of {sorted(METRICS)}")
    if search.cache not in ("auto", "memory", "disk", "none"):
        raise ValueError(f"search.cache={search.cache!r}: use auto, memory, disk or none")
    curriculum = search.curriculum
    if not (0 <= curriculum.start_threshold <= 1 and 0 <= curriculum.end_threshold <= 1):
        raise ValueError(
            "search.curriculum.start_threshold / end_threshold (START_THRESHOLD / END_THRESHOLD) must lie in [0, 1]"
        )
    used = {search.mode} | ({search.engine} if validates else set())
    if "corpus" in used and not search.corpus_path:
        raise ValueError("search.corpus_path is not set: the `corpus` search needs a JSONL corpus")
    if "google" in used and not serpapi_key(search.google_api_key_env):
        raise ValueError(
            f"the `google` search needs a SerpAPI key in ${search.google_api_key_env} (or ${ZEROSEARCH_KEY_ENV})"
        )
    if search.mode in SIMULATED_MODES and not search.simulator.in_process and not search.simulator.server_urls:
        raise ValueError("search.simulator.server_urls (IP) is empty: the simulated search needs a server")


def check_qa_files(key: str, files: list[str], needs_question: bool) -> None:
    """Reads every row of the parquet ``files`` (config ``key``) and refuses the first whose gold
    answers are unusable (missing, not strings, empty, or all empty after normalisation, so that no
    answer could ever score) or, when ``needs_question``, whose question is missing. Errors name the
    file, the row and the column. Rows may use this project's layout or ZeroSearch's."""
    for path in files:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{key}: {path} does not exist")
        frame = pd.read_parquet(path)
        columns = {
            name: frame[name].to_numpy()
            for name in ("reward_model", "golden_answers", "extra_info", "question")
            if name in frame.columns
        }
        for i in range(len(frame)):
            try:
                answers = row_golden_answers(columns, i)
            except ValueError as e:
                raise ValueError(f"{key}: {path} row {i}: {e}") from None
            if not any(normalize_answer(a) for a in answers):
                raise ValueError(
                    f"{key}: {path} row {i}: the gold answers {answers!r:.200} are empty once normalised "
                    "(lowercase, no punctuation or articles), so no answer can ever match; fix or drop "
                    "the row"
                )
            if needs_question and not row_question(columns, i):
                raise ValueError(
                    f"{key}: {path} row {i}: no question (extra_info.question or a 'question' column), "
                    "which the simulated search tells the simulator; prepare data with "
                    "`python -m zerosearch.data.prepare`"
                )


def train(config: ZeroSearchConfig):
    validates = bool(config.data.val_files) and (config.trainer.val_before_train or config.trainer.test_freq > 0)
    check_search_config(config, validates)
    check_qa_files("data.train_files", expand_files(config.data.train_files), config.search.mode in SIMULATED_MODES)
    if validates:
        check_qa_files("data.val_files", expand_files(config.data.val_files), needs_question=False)
    return run_ppo(config)


@hydra.main(config_path=CONFIG_DIR, config_name="zerosearch_grpo", version_base=None)
def main(cfg: DictConfig) -> None:
    train(to_typed(cfg, ZeroSearchConfig))


if __name__ == "__main__":
    main()
