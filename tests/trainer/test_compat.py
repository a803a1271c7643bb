"""Peers' key names on the command line: renamed, converted where exact, refused all at once."""

import pytest

from verl.config import PPOConfig
from verl.config.compat import PeerKeyError, leaf_keys, translate
from verl.config.peer_keys import PEER_KEYS
from verl.trainer.run import load_config
from zerosearch.config import ZeroSearchConfig


def test_every_peer_key_points_at_a_key_of_a_config_here():
    search_keys = set(leaf_keys(ZeroSearchConfig))
    for entry in PEER_KEYS:
        if entry.new is None:
            continue
        if entry.old.endswith("."):
            assert any(k.startswith(entry.new) for k in search_keys), entry
        else:
            assert entry.new in search_keys, entry
        assert entry.old not in search_keys, f"{entry.old} is a key here: an alias would hide it"


def test_renames_conversions_and_no_ops_are_noted_once():
    translated = translate(
        [
            "--config-name",
            "zerosearch_grpo",
            "data.max_start_length=2048",
            "data.max_prompt_length=4096",
            "data.max_obs_length=500",
            "actor_rollout_ref.rollout.n_agent=5",
            "actor_rollout_ref.actor.ppo_mini_batch_size=320",
            "actor_rollout_ref.actor.ppo_micro_batch_size=64",
            "trainer.n_gpus_per_node=8",
            "critic.model.fsdp_config.param_offload=true",
            "+trainer.val_before_train=false",
            "trainer.default_hdfs_dir=null",
            "retriever.url=http://127.0.0.1:8000/retrieve",
            "retriever.llm_ip=10.0.0.2",
            "hydra.run.dir=out",
        ],
        ZeroSearchConfig,
    )
    assert translated.overrides == [
        "--config-name",
        "zerosearch_grpo",
        "data.max_prompt_length=2048",
        "actor_rollout_ref.rollout.agent.max_obs_length=500",
        "actor_rollout_ref.rollout.n=5",
        "actor_rollout_ref.actor.ppo_mini_batch_responses=320",  # beside n_agent: trajectories
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8",  # 64 over 8 workers
        "trainer.n_gpus_per_node=8",
        "critic.fsdp_config.param_offload=true",
        "trainer.val_before_train=false",
        "search.retriever_url=http://127.0.0.1:8000/retrieve",
        "search.simulator.server_urls=[http://10.0.0.2:6001/v1]",
        "hydra.run.dir=out",
        # their trainers put the KL in the reward whenever the KL loss is off
        "actor_rollout_ref.actor.use_kl_loss=false",
        "algorithm.use_kl_in_reward=true",
        "search.mode=wiki",
        "search.engine=wiki",
    ]
    assert len(translated.notes) == 14
    assert any(n.startswith("data.max_prompt_length=4096: dropped") for n in translated.notes)
    assert any(n.startswith("trainer.default_hdfs_dir: no effect here") for n in translated.notes)


def test_every_problem_is_named_in_one_message():
    with pytest.raises(PeerKeyError) as caught:
        translate(
            [
                "trainer.val_only=true",
                "data.train_data_num=1000",
                "actor_rollout_ref.actor.state_masking=false",
                "actor_rollout_ref.actor.ppo_micro_batch_size=12",
                "trainer.n_gpus_per_node=8",
                "actor_rollout_ref.actor.ppo_mini_batch_size=256",
                "actor_rollout_ref.rollout.n_agent=5",
                "actor_rollout_ref.rollout.multi_turn.tool_config_path=tools.yaml",
                "actor_rollout_ref.rollout.multi_turn.format=hermes",  # no effect without tools
                "data.train_batch_size=64",
                "trainer.totl_epochs=3",
                "+trainer.no_such=1",
            ],
            ZeroSearchConfig,
        )
    message = str(caught.value)
    assert message.startswith("7 overrides this config cannot take")
    for text in (
        "trainer.val_only=true: false only",
        "python -m zerosearch.eval",
        "data.train_data_num=1000: null only",
        "state_masking=false: true only",
        "ppo_micro_batch_size=12: a global micro-batch",
        "multi_turn.tool_config_path=tools.yaml: verl's tool-calling rollout",
        "trainer.totl_epochs: not a key of this config; the closest is trainer.total_epochs",
        "trainer.no_such: not a key",
    ):
        assert text in message
    assert "+" not in message.split("trainer.no_such")[1]  # no hint to add it with '+'


def test_the_search_agents_keys_name_its_entry_point_where_there_is_none():
    with pytest.raises(PeerKeyError, match="max_turns: a search agent's key.*zerosearch.train"):
        translate(["max_turns=2"], PPOConfig)
    # an engine key reached by a verl name is fine in the engine's config
    assert translate(["actor_rollout_ref.rollout.mode=async"], PPOConfig).overrides == [
        "actor_rollout_ref.rollout.agent.scheduling=async"
    ]


def test_the_composed_config_reads_peer_keys():
    config = load_config(["data.shuffle_train_dataloader=false", "critic.model.fsdp_config.optimizer_offload=true"])
    assert config.data.shuffle is False and config.critic.fsdp_config.optimizer_offload is True


def test_settings_that_fail_together_are_named_together():
    with pytest.raises(ValueError) as caught:
        load_config(["actor_rollout_ref.rollout.name=sglang", "actor_rollout_ref.actor.ppo_epochs=0"])
    message = str(caught.value)
    assert "2 settings to change" in message
    assert "actor_rollout_ref.rollout.name='sglang'" in message and "vllm" in message and "hf" in message
    assert "ppo_epochs=0 must be at least 1" in message


def test_flags_deletions_and_sections_are_read_as_hydra_means_them():
    from verl.config.compat import config_name_of, overrides_only

    args = ["--config-name", "zerosearch_ppo", "-cn=zerosearch_grpo", "~data.shuffle_train_dataloader", "x=1"]
    assert overrides_only(args) == ["~data.shuffle_train_dataloader", "x=1"]
    assert config_name_of(args[2:], "d") == "zerosearch_grpo" and config_name_of(args[:2], "d") == "zerosearch_ppo"
    assert translate(["~data.shuffle_train_dataloader"], PPOConfig).overrides == ["~data.shuffle"]
    with pytest.raises(PeerKeyError, match="critic.model.fsdp_config.no_such .critic.fsdp_config.no_such.: not a key"):
        translate(["critic.model.fsdp_config.no_such=1"], ZeroSearchConfig)


def test_a_refusal_beside_a_config_name_still_names_every_setting():
    from verl.config.compat import read_overrides
    from zerosearch.train import compose_typed

    with pytest.raises(PeerKeyError) as caught:
        read_overrides(
            [
                "--config-name",
                "zerosearch_grpo",
                "trainer.val_only=true",
                "actor_rollout_ref.rollout.name=sglang",
            ],
            ZeroSearchConfig,
            lambda overrides: compose_typed("zerosearch_grpo", overrides),
        )
    message = str(caught.value)
    assert message.startswith("2 overrides this config cannot take")
    assert "trainer.val_only=true" in message and "rollout.name='sglang'" in message


def test_a_mini_batch_in_trajectories_need_not_divide_the_batch_but_must_split_over_the_workers():
    fork = [
        "actor_rollout_ref.rollout.n=5",
        "data.train_batch_size=64",
        "actor_rollout_ref.actor.ppo_mini_batch_responses=256",
    ]
    config = load_config([*fork, "trainer.n_gpus_per_node=4"])  # 320 responses: 256 + 64, as the forks split
    assert config.mini_batch_responses() == (256, "actor_rollout_ref.actor.ppo_mini_batch_responses")
    assert config.mini_batch_responses(critic=True)[0] == 256  # the critic's follows the actor's
    with pytest.raises(
        ValueError, match="ppo_mini_batch_responses: 256 responses per mini-batch must split evenly over 5"
    ):
        load_config([*fork, "trainer.n_gpus_per_node=5"])
    with pytest.raises(
        ValueError, match="train_batch_size=64 is not a multiple of actor_rollout_ref.actor.ppo_mini_batch_size=48"
    ):
        load_config(["data.train_batch_size=64", "actor_rollout_ref.actor.ppo_mini_batch_size=48"])
    # a step's responses must still split evenly over the workers, else one would train on a repeated row
    with pytest.raises(ValueError, match=r"train_batch_size×rollout.n=15 responses must split evenly over 2"):
        load_config(
            [
                *fork,
                "data.train_batch_size=3",
                "actor_rollout_ref.actor.ppo_mini_batch_responses=8",
                "trainer.n_gpus_per_node=2",
            ]
        )
    # the critic's too, and a '+' (a key this config has) is not carried over
    args = ["actor_rollout_ref.rollout.n_agent=5", "+critic.ppo_mini_batch_size=40"]
    assert translate(args, ZeroSearchConfig).overrides[1] == "critic.ppo_mini_batch_responses=40"
