"""A run with a bad path, column or key stops before any worker starts, naming what was wrong."""

import os
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd
import pytest
import ray

from verl.trainer.main_ppo import load_config, run_ppo
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
    base = {"data.train_files": str(root / "good.parquet"), "data.val_files": str(root / "good.parquet"),
            "data.train_batch_size": "4", "actor_rollout_ref.actor.ppo_mini_batch_size": "4",
            "actor_rollout_ref.model.path": str(model), "trainer.n_gpus_per_node": "2", "trainer.device": "cpu"}
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
    run_expecting(FileNotFoundError, "nowhere/train.parquet", load_config(overrides(root, model, **{"data.train_files": missing})))


def test_missing_column(setup):
    root, model = setup
    config = load_config(overrides(root, model, **{"data.val_files": str(root / "no_source.parquet")}))
    run_expecting(ValueError, "data_source.*no_source.parquet|no_source.parquet.*data_source", config)


def test_model_path_that_does_not_exist(setup):
    root, model = setup
    config = load_config(overrides(root, model, **{"actor_rollout_ref.model.path": str(root / "no_model")}))
    run_expecting(FileNotFoundError, "actor_rollout_ref.model.path.*no_model", config)


def test_unknown_key_on_the_command_line(setup):
    root, model = setup
    proc = subprocess.run([sys.executable, "-m", "verl.trainer.main_ppo", *overrides(root, model),
                           "actor_rollout_ref.actor.no_such_option=3"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "no_such_option" in proc.stderr
    assert "Started a local Ray instance" not in proc.stderr
