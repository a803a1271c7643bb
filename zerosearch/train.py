"""Search-agent training: the engine's PPO trainer with the multi-turn search rollout and QA reward.

    python -m zerosearch.train --config-name zerosearch_grpo key=value ...

Recipes live in ``configs/``; ``train_grpo.sh`` / ``train_ppo.sh`` / ``train_reinforce.sh`` take
ZeroSearch's KEY VALUE arguments and call this.
"""

import functools
import os
import sys

import hydra
import pandas as pd
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from verl.config.compat import config_name_of, read_overrides
from verl.trainer.run import run_ppo
from verl.trainer.startup import check_model_folder, expand_files, to_typed
from verl.utils.reward_score.qa import normalize_answer
from zerosearch.config import ZeroSearchConfig, register_schema
from zerosearch.data.fields import row_golden_answers, row_question, row_supporting
from zerosearch.search import SIMULATED_MODES
from zerosearch.search.google import ZEROSEARCH_KEY_ENV, serpapi_key

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")

register_schema()


def compose_typed(config_name: str, overrides: list[str], schema: type = ZeroSearchConfig):
    """``configs/<config_name>.yaml`` after Hydra overrides in this project's keys, typed as ``schema``."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return to_typed(compose(config_name, overrides=overrides), schema)


def load_config(config_name: str, overrides: list[str] | None = None, schema: type = ZeroSearchConfig):
    """``configs/<config_name>.yaml`` after Hydra overrides (peers' key names read), typed as ``schema``."""
    composed = functools.partial(compose_typed, config_name, schema=schema)
    return composed(read_overrides(overrides or [], schema, composed))


def check_search_keys(config: ZeroSearchConfig) -> None:
    """The API keys the run's searches read from the environment are there (never logged)."""
    search = config.search
    if "google" in config.searches_used() and not serpapi_key(search.google_api_key_env):
        raise ValueError(
            f"the `google` search needs a SerpAPI key in ${search.google_api_key_env} (or ${ZEROSEARCH_KEY_ENV})"
        )


def check_qa_files(key: str, files: list[str], needs_question: bool) -> None:
    """Reads every row of the parquet ``files`` (config ``key``) and refuses the first whose gold
    answers are unusable (missing, not strings, empty, or all empty after normalisation, so that no
    answer could ever score), whose supporting facts are malformed or, when ``needs_question``,
    whose question is missing. Errors name the
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
                row_supporting(columns, i)
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


def check_search_inputs(config: ZeroSearchConfig) -> None:
    """The model folders of an in-process simulator or critic, and the corpus, load: found here,
    not at the first search or validation."""
    sim = config.search.simulator
    if config.searches_used() & set(SIMULATED_MODES) and sim.in_process:
        check_model_folder(sim.model, "search.simulator.model")
    if config.critictor.enabled() and config.critictor.backend == "in_process":
        check_model_folder(config.critictor.model, "critictor.model")
    corpus = config.search.corpus_path
    if "corpus" in config.searches_used() and corpus:
        from zerosearch.search.corpus import is_saved_index, load_corpus  # bm25s, only when it is used

        if not is_saved_index(os.path.expanduser(corpus)):
            load_corpus(os.path.expanduser(corpus))


def train(config: ZeroSearchConfig):
    check_search_keys(config)
    check_search_inputs(config)
    check_qa_files("data.train_files", expand_files(config.data.train_files), config.search.mode in SIMULATED_MODES)
    if config.validates():
        check_qa_files("data.val_files", expand_files(config.data.val_files), needs_question=False)
    return run_ppo(config)


@hydra.main(config_path=CONFIG_DIR, config_name="zerosearch_grpo", version_base=None)
def main(cfg: DictConfig) -> None:
    train(to_typed(cfg, ZeroSearchConfig))


if __name__ == "__main__":
    # peers' key names; every refused key, and every setting to change beside them, in one message
    name = config_name_of(sys.argv[1:], "zerosearch_grpo")
    sys.argv[1:] = read_overrides(sys.argv[1:], ZeroSearchConfig, functools.partial(compose_typed, name))
    main()
