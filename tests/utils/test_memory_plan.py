"""The memory plan checked at start on GPU: what one GPU holds at the rollout, and the refusal."""

import pytest

from verl.config import PPOConfig
from verl.utils.memory_plan import GIB, check_fits, describe, rollout_holdings

SEVEN_B = 7_600_000_000
H100 = 80 * GIB


def grpo_7b(**fsdp) -> PPOConfig:
    config = PPOConfig()
    config.actor_rollout_ref.rollout.gpu_memory_utilization = 0.6
    config.actor_rollout_ref.actor.use_kl_loss = True
    for key, value in fsdp.items():
        setattr(config.actor_rollout_ref.actor.fsdp_config, key, value)
    return config


def test_a_7b_grpo_run_fits_eight_gpus_and_is_refused_on_one_naming_what_to_change():
    on_eight = rollout_holdings(grpo_7b(), SEVEN_B, SEVEN_B, 0, world_size=8, device_bytes=H100)
    held = {h.what: h.bytes for h in on_eight}
    assert held["actor parameters (fp32 shard)"] == 4 * SEVEN_B // 8
    assert held["actor AdamW moments (fp32 shard)"] == 8 * SEVEN_B // 8
    assert held["reference parameters (bf16 shard)"] == 2 * SEVEN_B // 8
    assert held["vLLM engine (gpu_memory_utilization of the device)"] == int(0.6 * H100)
    check_fits(on_eight, H100)
    assert "total 63.4 GiB of the device's 80.0 GiB" in describe(on_eight, H100)
    on_one = rollout_holdings(grpo_7b(), SEVEN_B, SEVEN_B, 0, world_size=1, device_bytes=H100)
    with pytest.raises(MemoryError, match=r"about 150\.1 GiB per GPU") as refused:
        check_fits(on_one, H100)
    assert "optimizer_offload=true (frees up to 56.6 GiB)" in str(refused.value)
    assert "gpu_memory_utilization (frees up to 48.0 GiB)" in str(refused.value)


def test_offload_and_lora_take_their_share_off_the_device():
    offloaded = rollout_holdings(grpo_7b(param_offload=True), SEVEN_B, SEVEN_B, 0, world_size=1, device_bytes=H100)
    assert not any(h.what.startswith("actor") for h in offloaded)
    lora = grpo_7b()
    lora.actor_rollout_ref.model.lora_rank = 16
    held = rollout_holdings(lora, SEVEN_B, 40_000_000, 0, world_size=1, device_bytes=H100)
    names = {h.what: h.bytes for h in held}
    assert "reference parameters (bf16 shard)" not in names  # the actor with its adapters off
    assert names["actor AdamW moments (fp32 shard)"] == 8 * 40_000_000
    with_critic = rollout_holdings(grpo_7b(), SEVEN_B, SEVEN_B, SEVEN_B, world_size=8, device_bytes=H100)
    assert {"value model parameters (fp32 shard)", "value model AdamW moments (fp32 shard)"} <= {
        h.what for h in with_critic
    }
