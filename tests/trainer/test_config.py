import dataclasses
import os

import pytest
from hydra.errors import ConfigCompositionException

from verl.config import PPOConfig
from verl.trainer.run import load_config, warn_about_sampling
from verl.utils import config_yaml

YAML_PATH = os.path.join(os.path.dirname(__import__("verl.config", fromlist=["x"]).__file__), "ppo_trainer.yaml")


def test_yaml_is_generated_from_the_dataclass():
    assert config_yaml.stale([YAML_PATH]) == []


def test_composed_config_is_typed_and_takes_overrides():
    config = load_config(
        [
            "data.train_batch_size=8",
            "actor_rollout_ref.actor.ppo_mini_batch_size=8",
            "actor_rollout_ref.actor.optim.lr=3e-6",
            "trainer.logger=[console,file]",
        ]
    )
    assert isinstance(config, PPOConfig) and dataclasses.is_dataclass(config.actor_rollout_ref.actor)
    assert config.data.train_batch_size == 8
    assert config.actor_rollout_ref.actor.optim.lr == 3e-6
    assert config.trainer.logger == ["console", "file"]
    assert config.trainer.default_local_dir == "checkpoints/criticsearch/ppo"  # interpolation resolved


@pytest.mark.parametrize("prefix", ["", "+"])
def test_unknown_key_is_refused_with_its_name(prefix):
    with pytest.raises(ConfigCompositionException, match="trainer.no_such_key"):
        load_config([f"{prefix}trainer.no_such_key=1"])
    with pytest.raises(ConfigCompositionException, match="rollout.no_such_option"):
        load_config([f"{prefix}actor_rollout_ref.rollout.no_such_option=0.6"])


def test_wrong_type_is_refused_with_its_name():
    with pytest.raises(ConfigCompositionException, match="train_batch_size"):
        load_config(["data.train_batch_size=many"])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["algorithm.adv_estimator=ppo2"], "ppo2"),
        (["actor_rollout_ref.rollout.name=sglang"], "rollout.name"),
        (["actor_rollout_ref.rollout.tensor_model_parallel_size=2"], "name='hf' runs one per rank"),
        (
            ["actor_rollout_ref.rollout.tensor_model_parallel_size=3", "actor_rollout_ref.rollout.name=vllm"],
            "tensor_model_parallel_size=3 must divide trainer.n_gpus_per_node",
        ),
        (["data.train_batch_size=10", "actor_rollout_ref.actor.ppo_mini_batch_size=4"], "ppo_mini_batch_size"),
        (["actor_rollout_ref.actor.kl_loss_type=k9"], "kl_loss_type"),
        (["algorithm.adv_estimator=grpo", "actor_rollout_ref.rollout.n=1"], "rollout.n"),
        (["trainer.resume_mode=sometimes"], "resume_mode"),
        (["actor_rollout_ref.actor.loss_agg_mode=token-sum"], "actor.loss_agg_mode"),
        (["actor_rollout_ref.actor.clip_ratio_c=0.5"], "clip_ratio_c"),
        (
            ["actor_rollout_ref.ref.fsdp_config.mixed_precision.param_dtype=int8"],
            "ref.fsdp_config.mixed_precision.param_dtype",
        ),
        (["critic.optim.warmup_style=linear"], "critic.optim.warmup_style"),
        (["trainer.logger=[console,mlflow]"], "mlflow"),
        (["actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=0"], "ppo_micro_batch_size_per_gpu"),
        (["trainer.resume_mode=resume_path", "trainer.resume_from_path=/nowhere/global_step_3"], "resume_from_path"),
        (["algorithm.rollout_correction.bypass_mode=true", "actor_rollout_ref.rollout.top_p=0.9"], "bypass_mode"),
        (["algorithm.old_log_prob=from_rollout", "actor_rollout_ref.rollout.top_k=5"], "old_log_prob=from_rollout"),
        (["algorithm.old_log_prob=reuse"], "algorithm.old_log_prob"),
        (["actor_rollout_ref.actor.policy_loss.loss_mode=clip_cov"], "actor.policy_loss.loss_mode"),
    ],
)
def test_composing_the_config_names_the_offending_key(overrides, message):
    base = ["data.train_batch_size=8", "actor_rollout_ref.actor.ppo_mini_batch_size=8", "trainer.n_gpus_per_node=2"]
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_config(base + overrides)


def test_both_offloads_together_are_accepted():
    """ZeroSearch's and Search-R1's scripts set both; with params on CPU the optimizer is there too."""
    from verl.utils.fsdp_utils import moves_optimizer

    config = load_config(
        [
            "data.train_batch_size=8",
            "actor_rollout_ref.actor.ppo_mini_batch_size=8",
            "trainer.n_gpus_per_node=2",
            "actor_rollout_ref.actor.fsdp_config.param_offload=true",
            "actor_rollout_ref.actor.fsdp_config.optimizer_offload=true",
        ]
    )
    fsdp = config.actor_rollout_ref.actor.fsdp_config
    assert not moves_optimizer(fsdp, "cuda")
    fsdp.param_offload = False
    assert moves_optimizer(fsdp, "cuda") and not moves_optimizer(fsdp, "cpu")


def test_sampling_filters_are_warned_about(caplog):
    base = ["data.train_batch_size=8", "actor_rollout_ref.actor.ppo_mini_batch_size=8", "trainer.n_gpus_per_node=2"]
    warn_about_sampling(load_config(base))
    assert "top_k" not in caplog.text
    warn_about_sampling(load_config(base + ["actor_rollout_ref.rollout.top_k=5"]))
    assert "rollout/log_prob_diff_mean" in caplog.text and "top_k=5" in caplog.text


def test_the_defaults_compose_into_the_dataclass_defaults():
    expected = PPOConfig()
    trainer = expected.trainer
    trainer.default_local_dir = f"checkpoints/{trainer.project_name}/{trainer.experiment_name}"  # resolved
    assert load_config() == expected
    small = load_config(
        ["data.train_batch_size=8", "actor_rollout_ref.actor.ppo_mini_batch_size=8", "trainer.n_gpus_per_node=2"]
    )
    assert small.data.train_batch_size == small.actor_rollout_ref.actor.ppo_mini_batch_size == 8
    assert small.trainer.n_gpus_per_node == 2


# The overrides of verl's examples/grpo_trainer/run_qwen2-7b.sh, as the shell passes them.
VERL_QWEN2_7B_GRPO = [
    "algorithm.adv_estimator=grpo",
    "data.train_files=/data/gsm8k/train.parquet",
    "data.val_files=/data/gsm8k/test.parquet",
    "data.train_batch_size=1024",
    "data.max_prompt_length=512",
    "data.max_response_length=1024",
    "data.filter_overlong_prompts=True",
    "data.truncation=error",
    "actor_rollout_ref.model.path=Qwen/Qwen2-7B-Instruct",
    "actor_rollout_ref.actor.optim.lr=1e-6",
    "actor_rollout_ref.model.use_remove_padding=True",
    "actor_rollout_ref.actor.ppo_mini_batch_size=256",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=40",
    "actor_rollout_ref.actor.use_kl_loss=True",
    "actor_rollout_ref.actor.kl_loss_coef=0.001",
    "actor_rollout_ref.actor.kl_loss_type=low_var_kl",
    "actor_rollout_ref.actor.entropy_coeff=0",
    "actor_rollout_ref.model.enable_gradient_checkpointing=True",
    "actor_rollout_ref.actor.fsdp_config.param_offload=False",
    "actor_rollout_ref.actor.fsdp_config.optimizer_offload=False",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=40",
    "actor_rollout_ref.rollout.tensor_model_parallel_size=2",
    "actor_rollout_ref.rollout.name=vllm",
    "actor_rollout_ref.rollout.gpu_memory_utilization=0.6",
    "actor_rollout_ref.rollout.n=5",
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=40",
    "actor_rollout_ref.ref.fsdp_config.param_offload=True",
    "algorithm.use_kl_in_reward=False",
    "trainer.critic_warmup=0",
    'trainer.logger=["console","wandb"]',
    "trainer.project_name=verl_grpo_example_gsm8k",
    "trainer.experiment_name=qwen2_7b_function_rm",
    "trainer.n_gpus_per_node=8",
    "trainer.nnodes=1",
    "trainer.save_freq=20",
    "trainer.test_freq=5",
    "trainer.total_epochs=15",
]


def test_a_verl_grpo_script_composes_with_the_vllm_rollout():
    config = load_config(VERL_QWEN2_7B_GRPO)
    rollout = config.actor_rollout_ref.rollout
    assert (rollout.name, rollout.gpu_memory_utilization, rollout.n) == ("vllm", 0.6, 5)
    assert rollout.tensor_model_parallel_size == 2  # four engines of two GPUs each
    assert config.actor_rollout_ref.model.use_remove_padding


def test_verl_sequence_balance_keys_compose_with_verl_meanings():
    """The token-budget and padding-free keys of verl's seq-balance example scripts."""
    config = load_config(
        [
            "actor_rollout_ref.model.use_remove_padding=True",
            "actor_rollout_ref.actor.use_dynamic_bsz=True",
            "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=24000",
            "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=24000",
            "actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=24000",
            "critic.model.use_remove_padding=True",
            "critic.use_dynamic_bsz=True",
            "critic.ppo_max_token_len_per_gpu=98304",
            "trainer.balance_batch=True",
        ]
    )
    actor, rollout = config.actor_rollout_ref.actor, config.actor_rollout_ref.rollout
    assert actor.use_dynamic_bsz and actor.ppo_max_token_len_per_gpu == 24000
    assert rollout.log_prob_use_dynamic_bsz is None  # null: follows the actor, as verl's interpolation does
    assert config.critic.use_dynamic_bsz and config.critic.forward_max_token_len_per_gpu is None
    assert config.actor_rollout_ref.model.use_remove_padding and config.critic.model.use_remove_padding
