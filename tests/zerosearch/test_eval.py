import pytest

from zerosearch.eval import resolve_model_path, summarize, to_markdown, useless_searches


def test_summary_has_per_source_macro_and_micro_rows():
    per_source = {
        "nq": {
            "em": [1.0, 0.0, 1.0, 1.0],
            "cover_em": [1.0] * 4,
            "f1": [1.0, 0.5, 1.0, 1.0],
            "searches": [1.0, 2.0, 0.0, 1.0],
            "useless": [0.0, 1.0, 0.0, 0.0],
            "answered": [1.0] * 4,
        },
        "popqa": {
            "em": [0.0, 0.0],
            "cover_em": [0.0, 1.0],
            "f1": [0.0, 0.5],
            "searches": [3.0, 1.0],
            "useless": [2.0, 0.0],
            "answered": [1.0, 0.0],
        },
    }
    table = summarize(per_source)
    assert table["nq"]["em"] == 0.75 and table["nq"]["n"] == 4
    assert table["avg"]["em"] == pytest.approx((0.75 + 0.0) / 2)  # mean of the per-source means
    assert table["all"]["em"] == pytest.approx(3 / 6)  # mean over every question
    assert table["all"]["searches"] == pytest.approx(8 / 6) and table["all"]["useless"] == pytest.approx(3 / 6)
    markdown = to_markdown(table)
    assert markdown.splitlines()[2].startswith("| nq | 4 | 0.750 |") and "| avg |" in markdown


def test_useless_searches_are_those_the_path_judge_finds_bringing_nothing_new():
    def search(documents):
        return {"kind": "search", "documents": documents}

    bridge, final = "Dalo Press was founded by Bi Ka.", "Bi Ka was born in Tira."
    record = {
        "golden_answers": ["Tira"],
        "supporting": [["Dalo Press", "Bi Ka"], ["Bi Ka", "Tira"]],
        "turns": [
            search([bridge]),
            search([bridge]),  # a repeat
            search(["Lo Press was founded by Bi Ka."]),  # off the path
            search([final]),
            {"kind": "search", "documents": None},  # never ran
            {"kind": "answer", "documents": None},
        ],
    }
    assert useless_searches(record) == 2
    assert useless_searches(record | {"supporting": []}) == 3  # without a path, only the answer counts


def test_model_path_resolution(tmp_path):
    run = tmp_path / "run"
    hf = run / "global_step_7" / "actor" / "huggingface"
    hf.mkdir(parents=True)
    (hf / "config.json").write_text("{}")
    (run / "latest_checkpointed_iteration.txt").write_text("7")
    assert resolve_model_path(str(run)) == str(hf)  # a run folder: its latest checkpoint
    assert resolve_model_path(str(run / "global_step_7")) == str(hf)
    assert resolve_model_path(str(hf)) == str(hf)
    assert resolve_model_path("Qwen/Qwen2.5-3B") == "Qwen/Qwen2.5-3B"  # a hub id goes to from_pretrained
    sft = tmp_path / "sft"
    (sft / "global_step_3" / "model" / "huggingface").mkdir(parents=True)
    (sft / "global_step_3" / "model" / "huggingface" / "config.json").write_text("{}")
    (sft / "latest_checkpointed_iteration.txt").write_text("3")
    assert resolve_model_path(str(sft)) == str(sft / "global_step_3" / "model" / "huggingface")  # an SFT run
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model_path(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        resolve_model_path(str(tmp_path))


def test_a_vllm_engine_for_evaluation_reads_the_checkpoints_weights(tmp_path):
    """The recipe's rollout starts vLLM on dummy weights for the trainer to sync; evaluation has no
    trainer, so its engine must load the checkpoint: greedy vLLM equals greedy transformers."""
    from transformers import AutoTokenizer

    from verl.utils.tiny_model import build_tiny_model
    from verl.workers.rollout.base import SamplingParams
    from zerosearch.eval import build_engine
    from zerosearch.train import load_config

    path = str(
        build_tiny_model(
            tmp_path / "m", vocab_size=400, hidden_size=64, intermediate_size=128, num_heads=2, num_kv_heads=1
        )
    )
    tokenizer = AutoTokenizer.from_pretrained(path)
    config = load_config(
        "zerosearch_grpo",
        [
            "data.max_prompt_length=64",
            "data.max_response_length=16",
            "actor_rollout_ref.rollout.agent.max_turns=1",
            "actor_rollout_ref.rollout.agent.max_obs_length=16",
        ],
    )
    assert config.actor_rollout_ref.rollout.name == "vllm" and config.actor_rollout_ref.rollout.load_format == "dummy"
    greedy = SamplingParams(max_new_tokens=12, greedy=True)
    prompts = [[5, 6, 7, 8, 9], [10, 11, 12]]
    vllm_ids = [r.token_ids for r in build_engine(config, path, tokenizer, "cpu").generate(prompts, greedy)]
    config.actor_rollout_ref.rollout.name = "hf"
    hf_ids = [r.token_ids for r in build_engine(config, path, tokenizer, "cpu").generate(prompts, greedy)]
    assert vllm_ids == hf_ids
