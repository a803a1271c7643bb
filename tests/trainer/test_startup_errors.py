"""A run with a bad path, column or key stops before any worker starts, naming what was wrong."""

import os
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd
import pytest
import ray

from verl.trainer.run import load_config, run_ppo
from verl.utils.tiny_model import build_tiny_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("startup")
    model = build_tiny_model(root / "model", vocab_size=300, hidden_size=32, intermediate_size=64)
    rows = [{"prompt": [{"role": "user", "content": f"question {i}"}], "data_source": "toy"} for i in range(8)]
    pd.DataFrame(rows).to_parquet(root / "good.parquet")
    pd.DataFrame([{"prompt": r["prompt"]} for r in rows]).to_parquet(root / "no_source.parquet")
    (root / "reward.py").write_text(
        "def compute_score(data_source, solution_str, ground_truth, extra_info):\n    return 0.0\n"
    )
    return root, model


def overrides(root, model, **changes):
    base = {
        "data.train_files": str(root / "good.parquet"),
        "data.val_files": str(root / "good.parquet"),
        "data.train_batch_size": "4",
        "actor_rollout_ref.actor.ppo_mini_batch_size": "4",
        "actor_rollout_ref.model.path": str(model),
        "trainer.n_gpus_per_node": "2",
        "trainer.device": "cpu",
        "custom_reward_function.path": str(root / "reward.py"),
    }
    base.update(changes)
    return [f"{k}={v}" for k, v in base.items()]


def run_expecting(exc, message, config):
    started_before = ray.is_initialized()
    with pytest.raises(exc, match=message):
        run_ppo(config)
    assert ray.is_initialized() == started_before  # refused before Ray and the workers start


def test_missing_data_file(setup):
    root, model = setup
    missing = str(root / "nowhere" / "train.parquet")
    run_expecting(
        FileNotFoundError, "nowhere/train.parquet", load_config(overrides(root, model, **{"data.train_files": missing}))
    )


def test_missing_column(setup):
    root, model = setup
    config = load_config(overrides(root, model, **{"data.val_files": str(root / "no_source.parquet")}))
    run_expecting(ValueError, "data_source.*no_source.parquet|no_source.parquet.*data_source", config)


def test_model_path_that_does_not_exist(setup):
    root, model = setup
    config = load_config(overrides(root, model, **{"actor_rollout_ref.model.path": str(root / "no_model")}))
    run_expecting(FileNotFoundError, "actor_rollout_ref.model.path.*no_model", config)


@pytest.mark.parametrize(
    "options, expected",
    [
        (["actor_rollout_ref.actor.no_such_option=3"], ["actor_rollout_ref.actor.no_such_option: not a key"]),
        (["+trainer.no_such_option=true"], ["trainer.no_such_option: not a key"]),
        # every problem of the command line in one message, each with what to do
        (
            ["trainer.val_only=true", "actor_rollout_ref.actor.ppo_mini_bs=4", "retriever.topk=3"],
            [
                "3 overrides this config cannot take",
                "trainer.val_only=true: false only",
                "the closest is actor_rollout_ref.actor.ppo_mini_batch_size",
                "retriever.topk: a search agent's key",
                "zerosearch.train",
            ],
        ),
    ],
)
def test_unknown_keys_on_the_command_line(setup, options, expected):
    """Hydra lets ``+key=value`` add a key; the config refuses it like any unknown key, all at once."""
    root, model = setup
    proc = subprocess.run(
        [sys.executable, "-m", "verl.trainer.main_ppo", *overrides(root, model), *options],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    for text in expected:
        assert text in proc.stderr
    assert "Started a local Ray instance" not in proc.stderr


def test_peer_keys_on_the_command_line_are_renamed_and_noted(setup):
    """A Search-R1-style line: renamed keys reach the config, each rewrite noted once."""
    root, model = setup
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "verl.trainer.main_ppo",
            *overrides(root, model),
            "data.shuffle_train_dataloader=false",
            "+trainer.val_before_train=false",
            "data.train_data_num=null",
            "trainer.n_gpus_per_node=2",
            "actor_rollout_ref.actor.ppo_micro_batch_size=8",
            "trainer.dry_run=true",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "dry run: every check passed" in proc.stdout
    for note in (
        "data.shuffle_train_dataloader -> data.shuffle",
        "+trainer.val_before_train: trainer.val_before_train is a key of this config",
        "data.train_data_num: no effect here",
        "ppo_micro_batch_size=8 -> actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
    ):
        assert proc.stderr.count(note) == 1, note
    for line in ("shuffle: false", "val_before_train: false", "ppo_micro_batch_size_per_gpu: 4"):
        assert line in proc.stdout


def test_validation_never_drops_a_row(setup):
    """An overlong training prompt is dropped and counted; an overlong validation prompt is cut as
    data.truncation says, or stops the run naming the file and row."""
    from transformers import AutoTokenizer

    from verl.trainer.run import load_datasets

    root, model = setup
    rows = [{"prompt": [{"role": "user", "content": text}], "data_source": "toy"} for text in ("short", "word " * 60)]
    pd.DataFrame(rows).to_parquet(root / "mixed.parquet")
    tokenizer = AutoTokenizer.from_pretrained(model)
    mixed = {
        "data.train_files": str(root / "mixed.parquet"),
        "data.val_files": str(root / "mixed.parquet"),
        "data.max_prompt_length": "40",
    }
    with pytest.raises(ValueError, match=r"mixed\.parquet row 1: prompt is \d+ tokens.*data.truncation"):
        load_datasets(load_config(overrides(root, model, **mixed)), tokenizer)
    train, val = load_datasets(load_config(overrides(root, model, **mixed, **{"data.truncation": "left"})), tokenizer)
    assert (len(train), len(val), val.truncated) == (1, 2, 1)


@pytest.mark.parametrize(
    "option, message",
    [
        ("actor_rollout_ref.rollout.agent.env=no_such_module:Env", "agent.env: cannot import module 'no_such_module'"),
        ("actor_rollout_ref.rollout.agent.env=verl.protocol:DataProto", "agent.env=verl.protocol:DataProto is not an"),
        ("reward_model.reward_manager=verl.protocol:NoSuchManager", "reward_model.reward_manager: module"),
    ],
)
def test_a_plug_in_that_does_not_load_stops_the_run_before_any_worker(setup, option, message):
    root, model = setup
    run_expecting((ImportError, AttributeError, ValueError), message, load_config([*overrides(root, model), option]))


def test_a_batch_larger_than_the_training_set_is_refused(setup):
    root, model = setup
    config = load_config(
        overrides(root, model, **{"data.train_batch_size": "16", "actor_rollout_ref.actor.ppo_mini_batch_size": "16"})
    )
    run_expecting(ValueError, "data.train_batch_size=16 is more than the 8 rows of data.train_files", config)


def test_rows_without_a_score_are_refused_when_no_reward_function_is_set(setup):
    root, model = setup
    config = load_config(overrides(root, model, **{"custom_reward_function.path": "null"}))
    run_expecting(ValueError, "data.train_files: rows of data_source 'toy' have no built-in score", config)


def test_an_environment_under_the_wrong_manager_is_refused_before_any_worker(setup):
    root, model = setup
    config = load_config([*overrides(root, model), "actor_rollout_ref.rollout.agent.env=zerosearch.env:SearchEnv"])
    run_expecting(ValueError, "generation_manager=zerosearch.generation:SearchGenerationManager", config)


def test_lora_targets_the_model_lacks_are_refused_before_any_worker(setup):
    root, model = setup
    lora = {"actor_rollout_ref.model.lora_rank": "8", "actor_rollout_ref.model.target_modules": "[q_proj,qkv_proj]"}
    run_expecting(
        ValueError,
        "actor_rollout_ref.model.target_modules: Qwen2ForCausalLM has no module named qkv_proj$",
        load_config(overrides(root, model, **lora)),
    )
    pattern = {"actor_rollout_ref.model.lora_rank": "8", "actor_rollout_ref.model.target_modules": "attn_qkv"}
    run_expecting(
        ValueError,
        "actor_rollout_ref.model.target_modules='attn_qkv': .*not found",
        load_config(overrides(root, model, **pattern)),
    )
    bad_type = {"actor_rollout_ref.model.lora_rank": "8", "actor_rollout_ref.model.target_modules": "{a: 1}"}
    with pytest.raises(ValueError, match="target_modules must be a module name or a list of them"):
        load_config(overrides(root, model, **bad_type))
