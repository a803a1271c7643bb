import subprocess
import sys

import pytest

from zerosearch.launch import UsageError, eval_arguments, main, parse_key_values
from zerosearch.train import load_config


def test_keys_in_any_order_map_onto_config_keys():
    overrides, passthrough = parse_key_values(
        [
            "TOPK",
            "3",
            "MODEL_PATH",
            "/m",
            "DATA_PATH",
            "/d/",
            "IP",
            "10.0.0.5,host2:7000",
            "LOGGER",
            "console,wandb",
            "START_THRESHOLD",
            "0.1",
            "EXPERIMENT_NAME",
            "it's,odd=1",
            "--",
            "trainer.save_freq=10",
        ]
    )
    assert overrides == [
        "search.topk=3",
        "actor_rollout_ref.model.path='/m'",
        "data.train_files='/d/train.parquet'",
        "data.val_files='/d/test.parquet'",
        "search.simulator.server_urls=[http://10.0.0.5:6001/v1,http://host2:7000/v1]",
        "trainer.logger=[console,wandb]",
        "search.curriculum.start_threshold=0.1",
        "trainer.experiment_name='it\\'s,odd=1'",
    ]
    assert passthrough == ["trainer.save_freq=10"]
    config = load_config("zerosearch_grpo", overrides + passthrough)
    assert config.search.topk == 3 and config.trainer.logger == ["console", "wandb"]
    assert config.trainer.experiment_name == "it's,odd=1" and config.data.train_files == "/d/train.parquet"
    assert config.search.simulator.server_urls == ["http://10.0.0.5:6001/v1", "http://host2:7000/v1"]


def test_keys_not_given_keep_the_recipe_values():
    overrides, _ = parse_key_values(["SEARCH_MODE", "simulate_sft"])
    config = load_config("zerosearch_ppo", overrides)
    assert config.search.mode == "simulate_sft"
    assert config.algorithm.adv_estimator == "gae" and config.critic.optim.lr == 1e-5
    assert config.algorithm.use_kl_in_reward and not config.actor_rollout_ref.actor.use_kl_loss
    grpo = load_config("zerosearch_grpo")
    assert (grpo.data.train_batch_size, grpo.actor_rollout_ref.rollout.n) == (64, 5)
    assert grpo.actor_rollout_ref.actor.optim.lr == 1e-6 and grpo.agent.reward_metric == "f1"
    assert (grpo.actor_rollout_ref.actor.kl_loss_coef, grpo.actor_rollout_ref.actor.kl_loss_type) == (
        0.001,
        "low_var_kl",
    )
    assert grpo.data.max_response_length == 500


@pytest.mark.parametrize(
    "args, message",
    [
        (["TOPK"], "TOPK has no value"),
        (["TOPK", "MAX_TURNS", "3"], "TOPK has no value"),
        (["BATCH", "3"], "unknown key 'BATCH'"),
        (["TOPK", "3", "TOPK", "4"], "given twice"),
        (["topk", "3"], "unknown key 'topk'"),
    ],
)
def test_bad_arguments_are_refused(args, message):
    with pytest.raises(UsageError, match=message):
        parse_key_values(args)


def test_unknown_key_lists_the_valid_keys(capsys):
    assert main(["grpo", "NUM_GPUS", "4"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'NUM_GPUS'" in err
    for key in ("NUM_GPUS_PER_NODE", "MODEL_PATH", "SEARCH_ENGINE", "END_THRESHOLD", "LOGGER"):
        assert key in err


def test_script_exits_2_on_a_key_without_value():
    proc = subprocess.run(
        ["bash", "train_reinforce.sh", "MAX_TURNS"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 2 and "MAX_TURNS has no value" in proc.stderr


def test_existing_local_paths_become_absolute(tmp_path, monkeypatch):
    (tmp_path / "model").mkdir()
    monkeypatch.chdir(tmp_path)
    overrides, _ = parse_key_values(["MODEL_PATH", "model", "SIMULATION_LLM", "Qwen2.5-3B-Instruct"])
    assert overrides == [
        f"actor_rollout_ref.model.path='{tmp_path / 'model'}'",
        "search.simulator.model='Qwen2.5-3B-Instruct'",
    ]  # a served name stays as given


def test_eval_keys(tmp_path):
    (tmp_path / "test.parquet").write_text("")
    args = eval_arguments(["OUT_DIR", "o", "MODEL_PATH", "m", "DATA_PATH", str(tmp_path), "TOPK", "2", "--", "x=1"])
    assert args == ["--out", "o", "--model", "m", "--data", str(tmp_path / "test.parquet"), "search.topk=2", "x=1"]
    with pytest.raises(UsageError, match="MODEL_PATH is required"):
        eval_arguments(["OUT_DIR", "o", "DATA_PATH", "d"])


def test_critic_keys_turn_the_critic_on():
    overrides, _ = parse_key_values(
        [
            "RETROSPECTIVE_CRITIC",
            "true",
            "INTERACTIVE_CRITIC",
            "False",
            "CRITIC_LLM",
            "Qwen2.5-14B-Instruct",
            "CRITIC_IP",
            "10.0.0.7,host3:7002",
            "TURN_REWARD_COEF",
            "0.2",
            "CRITIC_BACKEND",
            "rule",
            "RULE_JUDGE",
            "shuffled",
        ]
    )
    config = load_config("zerosearch_grpo", overrides)
    c = config.critictor
    assert c.retrospective.enable and not c.interactive.enable
    assert (c.model, c.turn_reward_coef, c.backend, c.rule_judge) == ("Qwen2.5-14B-Instruct", 0.2, "rule", "shuffled")
    assert c.server_urls == ["http://10.0.0.7:6002/v1", "http://host3:7002/v1"]
    assert config.algorithm.adv_estimator == "grpo_turn"  # the recipe's GRPO takes turn rewards
    config.check("")
    with pytest.raises(UsageError, match="true or false"):
        parse_key_values(["INTERACTIVE_CRITIC", "yes"])


def test_turn_rewards_need_an_estimator_that_keeps_turns():
    with pytest.raises(ValueError, match="grpo_turn"):
        load_config("zerosearch_grpo", ["algorithm.adv_estimator=grpo", "critictor.retrospective.enable=true"])
    for estimator in ("gae", "reinforce"):
        load_config("zerosearch_grpo", [f"algorithm.adv_estimator={estimator}", "critictor.retrospective.enable=true"])


def test_every_key_comes_from_a_field_that_declares_it():
    from verl.utils.config import leaf_fields
    from zerosearch.config import ZeroSearchConfig
    from zerosearch.launch import training_keys

    declared = {f.metadata["key"]: dotted for dotted, f, _ in leaf_fields(ZeroSearchConfig) if f.metadata.get("key")}
    keys = training_keys()
    assert set(keys) == set(declared)
    assert [t for t, _ in keys["DATA_PATH"]] == ["data.train_files", "data.val_files"]
    assert [t for t, _ in keys["CRITIC_IP"]] == ["critictor.server_urls"]
    # a key's config value is written by its field's type: a flag, a list, a quoted string, a number
    overrides, _ = parse_key_values(["DRY_RUN", "1", "LOGGER", "console", "ROLLOUT", "hf", "TOPK", "4"])
    assert overrides == [
        "trainer.dry_run=true",
        "trainer.logger=[console]",
        "actor_rollout_ref.rollout.name='hf'",
        "search.topk=4",
    ]


def test_eval_keys_come_from_the_evaluation_arguments_fields():
    import dataclasses

    from zerosearch.config import EvalArguments
    from zerosearch.launch import EVAL_ARGUMENTS

    declared = {f.metadata["key"]: f.name for f in dataclasses.fields(EvalArguments) if f.metadata["key"]}
    assert EVAL_ARGUMENTS == {key: "--" + name.replace("_", "-") for key, name in declared.items()}
    assert EVAL_ARGUMENTS["BATCH_SIZE"] == "--batch-size" and EVAL_ARGUMENTS["SEARCH_ENGINE"] == "--engine"
