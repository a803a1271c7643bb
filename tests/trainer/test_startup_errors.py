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


@pytest.mark.parametrize("option", ["actor_rollout_ref.actor.no_such_option=3", "+trainer.val_only=true"])
def test_unknown_key_on_the_command_line(setup, option):
    """Hydra lets ``+key=value`` add a key; the typed config refuses it like any unknown key."""
    root, model = setup
    proc = subprocess.run(
        [sys.executable, "-m", "verl.trainer.main_ppo", *overrides(root, model), option],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert option.split("=")[0].lstrip("+").rsplit(".", 1)[-1] in proc.stderr
    assert "Could not override" in proc.stderr
    assert "Started a local Ray instance" not in proc.stderr


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
