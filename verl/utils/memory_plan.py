"""What one GPU must hold when the rollout engine wakes beside the trainer's models, estimated from
parameter counts before any weight is loaded, so a run that cannot fit stops at start with the
setting to change rather than running out of memory at its first rollout."""

from dataclasses import dataclass

GIB = 2**30
CONTEXTS_AND_SLACK = 3 * GIB  # CUDA contexts of the worker processes, allocator fragmentation


@dataclass(frozen=True)
class Holding:
    what: str
    bytes: int
    knob: str  # the setting that takes it off the device


def rollout_holdings(
    config, policy_params: int, trainable_params: int, value_params: int, world_size: int, device_bytes: int
) -> list[Holding]:
    """Per GPU, while vLLM generates: the engine's share of the device, and whatever the actor,
    reference and value model keep on it between their passes (gradients are freed after each
    update; the optimizer state stays unless offloaded)."""
    arr = config.actor_rollout_ref
    actor = arr.actor.fsdp_config
    held = [
        Holding(
            "vLLM engine (gpu_memory_utilization of the device)",
            int(arr.rollout.gpu_memory_utilization * device_bytes),
            "actor_rollout_ref.rollout.gpu_memory_utilization",
        )
    ]
    if not actor.param_offload:
        held.append(
            Holding(
                "actor parameters (fp32 shard)",
                4 * policy_params // world_size,
                "actor_rollout_ref.actor.fsdp_config.param_offload=true",
            )
        )
    if not (actor.param_offload or actor.optimizer_offload):
        held.append(
            Holding(
                "actor AdamW moments (fp32 shard)",
                8 * trainable_params // world_size,
                "actor_rollout_ref.actor.fsdp_config.optimizer_offload=true",
            )
        )
    uses_reference = arr.actor.use_kl_loss or config.algorithm.use_kl_in_reward
    separate_reference = uses_reference and not arr.model.lora_rank  # with LoRA: the actor, adapters off
    if separate_reference and not arr.ref.fsdp_config.param_offload:
        held.append(
            Holding(
                "reference parameters (bf16 shard)",
                2 * policy_params // world_size,
                "actor_rollout_ref.ref.fsdp_config.param_offload=true",
            )
        )
    critic = config.critic.fsdp_config
    if value_params and not critic.param_offload:
        held.append(
            Holding(
                "value model parameters (fp32 shard)",
                4 * value_params // world_size,
                "critic.fsdp_config.param_offload=true",
            )
        )
    if value_params and not (critic.param_offload or critic.optimizer_offload):
        held.append(
            Holding(
                "value model AdamW moments (fp32 shard)",
                8 * value_params // world_size,
                "critic.fsdp_config.optimizer_offload=true",
            )
        )
    held.append(Holding("CUDA contexts and allocator slack", CONTEXTS_AND_SLACK, "more GPUs (trainer.n_gpus_per_node)"))
    return held


def describe(held: list[Holding], device_bytes: int) -> str:
    lines = [f"  {h.what}: {h.bytes / GIB:.1f} GiB" for h in held]
    total = sum(h.bytes for h in held)
    lines.append(f"  total {total / GIB:.1f} GiB of the device's {device_bytes / GIB:.1f} GiB")
    return "memory per GPU at the rollout:\n" + "\n".join(lines)


def check_fits(held: list[Holding], device_bytes: int) -> None:
    """Refuses a plan over the device's memory, naming the settings that would free the most."""
    total = sum(h.bytes for h in held)
    if total <= device_bytes:
        return
    largest = sorted((h for h in held if h.knob), key=lambda h: -h.bytes)[:3]
    knobs = "; ".join(f"{h.knob} (frees up to {h.bytes / GIB:.1f} GiB)" for h in largest)
    raise MemoryError(
        f"this run needs about {total / GIB:.1f} GiB per GPU at its rollouts, the device has "
        f"{device_bytes / GIB:.1f} GiB.\n{describe(held, device_bytes)}\nChange: {knobs}"
    )
