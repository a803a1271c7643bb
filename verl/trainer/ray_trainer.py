"""The single-controller PPO trainer: the driver runs the loop, Ray workers do the heavy lifting.

The entry point hands it the worker classes (``WorkerClasses``); the rollout loop and the reward
are plug-ins named in the config (``GenerationManager``, ``RewardManager``).
"""

import os
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from verl.algos import core_algos
from verl.config import AlgorithmConfig, PPOConfig
from verl.protocol import DataProto, RolloutSettings
from verl.single_controller import (
    RayClassWithInitArgs,
    RayResourcePool,
    RayWorkerGroup,
    create_colocated_worker_cls,
)
from verl.single_controller.worker import Worker
from verl.trainer.data_loader import ResumableBatches, validation_batches
from verl.trainer.generation import GenerationManager
from verl.trainer.metrics import (
    compute_data_metrics,
    compute_rollout_log_prob_metrics,
    compute_throughput_metrics,
    first_pass_metrics,
    reward_extra_metrics,
    timer,
)
from verl.trainer.reward import RewardManager
from verl.trainer.rollout_dump import dump_rollouts
from verl.trainer.startup import worker_log_dir
from verl.utils.batch_schema import Key
from verl.utils.checkpoint import checkpoint_dir, load_first, mark_latest, resume_dirs, rng_state, set_rng_state
from verl.utils.import_utils import load_object
from verl.utils.micro_batch import balance_batch
from verl.utils.torch_functional import masked_mean
from verl.utils.tracking import Tracking, plain_config


@dataclass(frozen=True)
class WorkerClasses:
    """The Ray worker classes the trainer starts: policy/rollout/reference (built with a role name)
    and the value critic."""

    actor_rollout_ref: type[Worker]
    critic: type[Worker]


def apply_kl_penalty(
    data: DataProto, kl_ctrl: core_algos.FixedKLController | core_algos.AdaptiveKLController, kl_penalty: str
) -> dict[str, float]:
    """Subtracts β·KL(actor‖ref) from ``token_level_rewards`` on sampled tokens."""
    mask = data.batch[Key.RESPONSE_MASK].float()
    kld = core_algos.kl_penalty(data.batch[Key.OLD_LOG_PROBS], data.batch[Key.REF_LOG_PROB], kl_penalty) * mask
    data.batch[Key.TOKEN_LEVEL_REWARDS] = data.batch[Key.TOKEN_LEVEL_REWARDS] - kl_ctrl.value * kld
    current_kl = masked_mean(kld, mask, axis=-1).mean().item()
    metrics = {"critic/kl": current_kl, "critic/kl_coef": kl_ctrl.value}
    kl_ctrl.update(current_kl=current_kl, n_steps=len(data))
    return metrics


def old_log_prob_source(cfg: PPOConfig, rows: int, step: int) -> str:
    """Where the old log-probs of ``step``, a batch of ``rows`` responses, come from: recompute (the
    actor's separate pass), from_update (the update's first forward pass, when the update is
    on-policy) or from_rollout (the rollout's log-probs), as ``algorithm.old_log_prob`` chooses (auto:
    from_update when on-policy, else recompute). from_update in a step that is not on-policy is an
    error, never a silent recompute."""
    choice = cfg.algorithm.old_log_prob_choice()
    if choice in ("recompute", "from_rollout"):
        return choice
    off_policy = cfg.off_policy_reasons(rows, step)
    if choice == "auto":
        return "recompute" if off_policy else "from_update"
    if off_policy:
        raise ValueError(
            f"algorithm.old_log_prob=from_update needs an on-policy update, but in step {step}, "
            f"{'; '.join(off_policy)}: use algorithm.old_log_prob=auto (from_update in the steps that allow it, "
            "else recompute) or recompute"
        )
    return choice


def rollout_log_probs(data: DataProto) -> torch.Tensor:
    """The log-probs the rollout sampled with, as the old log-probs (algorithm.old_log_prob=from_rollout)."""
    if Key.ROLLOUT_LOG_PROBS not in data.batch.keys():
        raise ValueError(
            "algorithm.old_log_prob=from_rollout (or rollout_correction.bypass_mode=true) needs the rollout's "
            "log-probs (rollout_log_probs), and this rollout returned none: choose another algorithm.old_log_prob"
        )
    return data.batch[Key.ROLLOUT_LOG_PROBS].clone()


def turn_rewards(data: DataProto) -> core_algos.TurnRewards | None:
    """The turn rewards a rollout loop put in the batch (``turn_scores``, ``turn_graded``,
    ``turn_ids``), or None."""
    if Key.TURN_SCORES not in data.batch.keys():
        return None
    b = data.batch
    return core_algos.TurnRewards(scores=b[Key.TURN_SCORES], graded=b[Key.TURN_GRADED], turn_ids=b[Key.TURN_IDS])


def initial_rewards(data: DataProto) -> None:
    """token_level_rewards = the reward manager's scores plus any turn rewards of the rollout loop."""
    turns = turn_rewards(data)
    scores = data.batch[Key.TOKEN_LEVEL_SCORES]
    data.batch[Key.TOKEN_LEVEL_REWARDS] = scores if turns is None else scores + turns.scores


def compute_advantage(data: DataProto, algorithm: AlgorithmConfig) -> None:
    """Fills ``advantages`` and ``returns`` with the configured estimator."""
    estimator = core_algos.get_adv_estimator_fn(algorithm.adv_estimator)
    advantages, returns = estimator(
        data.batch[Key.TOKEN_LEVEL_REWARDS],
        data.batch[Key.RESPONSE_MASK].float(),
        index=data.non_tensor_batch.get("uid"),
        values=data.batch[Key.VALUES] if Key.VALUES in data.batch.keys() else None,
        turns=turn_rewards(data),
        gamma=algorithm.gamma,
        lam=algorithm.lam,
        norm_adv_by_std_in_grpo=algorithm.norm_adv_by_std_in_grpo,
    )
    data.batch[Key.ADVANTAGES], data.batch[Key.RETURNS] = advantages, returns


class RayPPOTrainer:
    def __init__(
        self,
        config: PPOConfig,
        tokenizer: Any,
        train_dataset: Any,
        val_dataset: Any | None,
        workers: WorkerClasses,
        device: str,
    ):
        self.config = config
        self.tokenizer = tokenizer
        self.train_dataset = train_dataset
        self.val_dataset = val_dataset
        self.workers = workers
        self.device = device
        self.use_critic = config.algorithm.adv_estimator == "gae"
        self.use_ref = config.actor_rollout_ref.actor.use_kl_loss or config.algorithm.use_kl_in_reward
        self.train_batches = ResumableBatches(
            train_dataset, config.data.train_batch_size, config.data.shuffle, config.data.seed
        )
        epochs_steps = self.train_batches.batches_per_epoch * config.trainer.total_epochs
        self.total_training_steps = config.trainer.total_training_steps or epochs_steps  # None: by epochs
        config.actor_rollout_ref.actor.optim.total_training_steps = self.total_training_steps
        config.critic.optim.total_training_steps = self.total_training_steps
        self.kl_ctrl = core_algos.get_kl_controller(config.algorithm.kl_ctrl)
        reward_cls: type[RewardManager] = load_object(config.reward_model.reward_manager, "reward_model.reward_manager")
        self.reward_fn = reward_cls(config, tokenizer)
        self.global_steps = 0

    # ---- workers -------------------------------------------------------------------------------
    def init_workers(self) -> None:
        cfg = self.config
        nodes = [cfg.trainer.n_gpus_per_node] * cfg.trainer.nnodes
        use_gpu = self.device == "cuda"
        env = {"TOKENIZERS_PARALLELISM": "false"}
        actor_role = "actor_rollout_ref" if self.use_ref and cfg.trainer.colocate_workers else "actor_rollout"
        roles = {actor_role: RayClassWithInitArgs(self.workers.actor_rollout_ref, (cfg, actor_role))}
        if self.use_ref and not cfg.trainer.colocate_workers:
            roles["ref"] = RayClassWithInitArgs(self.workers.actor_rollout_ref, (cfg, "ref"))
        if self.use_critic:
            roles["critic"] = RayClassWithInitArgs(self.workers.critic, (cfg,))
        log_dir = worker_log_dir(cfg.ray_init, cfg.trainer)
        if cfg.trainer.colocate_workers:
            pool = RayResourcePool(nodes, use_gpu)
            fused_cls = create_colocated_worker_cls(roles)
            fused = RayWorkerGroup(pool, fused_cls, self.device, env, log_dir, name="+".join(roles))
            groups = fused.spawn(roles)
        else:
            pool = RayResourcePool(nodes, use_gpu, max_colocate_count=len(roles))
            groups = {
                role: RayWorkerGroup(pool, spec, self.device, env, log_dir, name=role) for role, spec in roles.items()
            }
        self.resource_pool = pool
        self.actor_rollout_wg = groups[actor_role]
        self.ref_wg = groups.get("ref", self.actor_rollout_wg)
        self.critic_wg = groups.get("critic")
        for group in groups.values():
            group.init_model()
        self.actor_rollout_wg.sync_rollout_weights()
        manager_cls: type[GenerationManager] = load_object(
            cfg.actor_rollout_ref.rollout.manager(), "actor_rollout_ref.rollout.generation_manager"
        )
        self.generation_manager = manager_cls(cfg, self.actor_rollout_wg, self.tokenizer)

    def shutdown(self) -> None:
        """Ends the workers and frees their slots, so another run can start in the same Ray session."""
        for group in {id(g): g for g in (self.actor_rollout_wg, self.ref_wg, self.critic_wg) if g}.values():
            group.shutdown()
        self.resource_pool.release()

    # ---- one step ------------------------------------------------------------------------------
    def _generate(self, batch: DataProto, validate: bool) -> DataProto:
        gen_batch = batch.select(
            batch_keys=[Key.INPUT_IDS, Key.ATTENTION_MASK, Key.POSITION_IDS],
            non_tensor_batch_keys=list(batch.non_tensor_batch),
        )
        gen_batch.meta_info = {
            "rollout": RolloutSettings(validate=validate, step=self.global_steps, total_steps=self.total_training_steps)
        }
        out = self.generation_manager.generate_sequences(gen_batch)
        # The rollout is over: its engine's memory goes back before any other pass (the old-log-prob
        # one, which used to free it, may be skipped).
        self.actor_rollout_wg.release_rollout()
        return out

    def _compute_reward(self, batch: DataProto) -> dict[str, np.ndarray]:
        scores, extra = self.reward_fn(batch)
        batch.batch[Key.TOKEN_LEVEL_SCORES] = scores
        return extra

    def train_step(self, batch: DataProto) -> dict[str, float]:
        cfg = self.config
        metrics: dict[str, float] = {}
        timing: dict[str, float] = {}
        critic = self.critic_wg
        with timer("step", timing):
            batch.non_tensor_batch["uid"] = np.array([str(uuid.uuid4()) for _ in range(len(batch))], dtype=object)
            with timer("gen", timing):
                batch = self._generate(batch, validate=False)
            metrics.update(batch.meta_info.pop("metrics", {}))
            if cfg.trainer.balance_batch:
                balance_batch(batch, self.actor_rollout_wg.world_size)
            with timer("reward", timing):
                extra = self._compute_reward(batch)
            metrics.update(reward_extra_metrics("reward", extra))
            old_log_prob = old_log_prob_source(cfg, len(batch), self.global_steps)
            if old_log_prob == "recompute":
                with timer("old_log_prob", timing):
                    batch = batch.union(self.actor_rollout_wg.compute_log_prob(batch))
            elif old_log_prob == "from_rollout":
                batch.batch[Key.OLD_LOG_PROBS] = rollout_log_probs(batch)
            # The update's first pass: the old log-probs themselves, or the actor's own beside the rollout's.
            batch.meta_info["report_first_pass"] = old_log_prob != "recompute"
            if self.use_ref:
                with timer("ref", timing):
                    batch = batch.union(self.ref_wg.compute_ref_log_prob(batch))
            if critic is not None:
                with timer("values", timing):
                    batch = batch.union(critic.compute_values(batch))
            with timer("adv", timing):
                initial_rewards(batch)
                if cfg.algorithm.use_kl_in_reward:
                    metrics.update(apply_kl_penalty(batch, self.kl_ctrl, cfg.algorithm.kl_penalty))
                compute_advantage(batch, cfg.algorithm)
            if critic is not None:
                with timer("update_critic", timing):
                    metrics.update(critic.update_critic(batch).meta_info["metrics"])
            if self.global_steps > cfg.trainer.critic_warmup:
                with timer("update_actor", timing):
                    updated = self.actor_rollout_wg.update_actor(batch)
                metrics.update(updated.meta_info.pop("metrics"))
                if old_log_prob == "from_update":
                    batch = batch.union(updated.select(batch_keys=[Key.OLD_LOG_PROBS, Key.ENTROPYS]))
                elif old_log_prob == "from_rollout":
                    metrics.update(first_pass_metrics(batch, updated))
                with timer("sync_weights", timing):
                    self.actor_rollout_wg.sync_rollout_weights()
            if old_log_prob != "from_rollout":
                metrics.update(compute_rollout_log_prob_metrics(batch))
            if cfg.trainer.rollout_data_dir:
                with timer("dump_rollouts", timing):
                    dump_rollouts(batch, extra, self.tokenizer, self.global_steps, cfg.trainer.rollout_data_dir)
        metrics.update(compute_data_metrics(batch, self.use_critic))
        metrics.update({f"timing_s/{k}": v for k, v in timing.items()})
        metrics.update(compute_throughput_metrics(batch, timing["step"], self.resource_pool.world_size))
        return metrics

    # ---- validation ----------------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        if self.val_dataset is None:
            raise ValueError("validate() needs data.val_files")
        per_source: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        rollout_metrics: dict[str, list[tuple[float, int]]] = defaultdict(list)
        for batch in validation_batches(self.val_dataset, self.config.data.val_batch_size):
            batch = self._generate(batch, validate=True)
            for key, value in batch.meta_info.pop("metrics", {}).items():
                rollout_metrics[key].append((value, len(batch)))
            extra = self._compute_reward(batch)
            sources = batch.non_tensor_batch["data_source"]
            for key, row_values in extra.items():
                for source, value in zip(sources, row_values, strict=True):
                    if isinstance(value, (int, float, np.number, bool, np.bool_)):
                        per_source[source][key].append(float(value))
        metrics: dict[str, float] = {}
        overall: dict[str, list[float]] = defaultdict(list)
        for source, by_key in per_source.items():
            for key, values in by_key.items():
                metrics[f"val/{source}/{key}"] = float(np.mean(values))
                overall[key].extend(values)
        metrics.update({f"val/{key}": float(np.mean(v)) for key, v in overall.items()})
        # The rollout loop's own metrics (e.g. searches, failures), weighted by batch size.
        metrics.update(
            {
                f"val/{key}": sum(v * n for v, n in pairs) / max(sum(n for _, n in pairs), 1)
                for key, pairs in rollout_metrics.items()
            }
        )
        return metrics

    # ---- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        step_dir = checkpoint_dir(self.config.trainer.default_local_dir, self.global_steps)
        self.actor_rollout_wg.save_checkpoint(os.path.join(step_dir, "actor"))
        if self.critic_wg is not None:
            self.critic_wg.save_checkpoint(os.path.join(step_dir, "critic"))
        os.makedirs(step_dir, exist_ok=True)
        torch.save(
            {
                "global_steps": self.global_steps,
                "dataloader": self.train_batches.state_dict(),
                "kl_coef": self.kl_ctrl.value,
                "rng": rng_state(),
            },
            os.path.join(step_dir, "trainer_state.pt"),
        )
        mark_latest(self.config.trainer.default_local_dir, self.global_steps)

    def load_checkpoint(self) -> None:
        cfg = self.config.trainer
        step_dirs = resume_dirs(cfg.resume_mode, cfg.resume_from_path, cfg.default_local_dir)
        if load_first(step_dirs, self._load_from) is not None:
            print(f"resumed: continuing at step {self.global_steps + 1}")

    def _load_from(self, step_dir: str) -> None:
        state = torch.load(os.path.join(step_dir, "trainer_state.pt"), weights_only=False)
        self.actor_rollout_wg.load_checkpoint(os.path.join(step_dir, "actor"))
        if self.critic_wg is not None:
            self.critic_wg.load_checkpoint(os.path.join(step_dir, "critic"))
        self.global_steps = state["global_steps"]
        self.train_batches.load_state_dict(state["dataloader"])
        self.kl_ctrl.value = state["kl_coef"]
        set_rng_state(state["rng"])
        print(f"resumed from {step_dir}")

    # ---- the loop ------------------------------------------------------------------------------
    def fit(self) -> None:
        cfg = self.config.trainer
        logger = Tracking(
            cfg.project_name,
            cfg.experiment_name,
            list(cfg.logger),
            config=plain_config(self.config),
            local_dir=cfg.default_local_dir,
        )
        self.load_checkpoint()
        logger.start_at(self.global_steps + 1 if self.global_steps else 0)
        if self.val_dataset is not None and cfg.val_before_train and self.global_steps == 0:
            logger.log(self.validate(), step=0)
        progress = tqdm(total=self.total_training_steps, initial=self.global_steps, desc="training steps")
        while self.global_steps < self.total_training_steps:
            self.global_steps += 1
            metrics = self.train_step(next(self.train_batches))
            last = self.global_steps == self.total_training_steps
            # Saved before validating: a validation that fails cannot cost the step.
            if cfg.save_freq > 0 and (last or self.global_steps % cfg.save_freq == 0):
                self.save_checkpoint()
            if self.val_dataset is not None and cfg.test_freq > 0 and (last or self.global_steps % cfg.test_freq == 0):
                timing: dict[str, float] = {}
                with timer("validate", timing):
                    metrics.update(self.validate())
                metrics["timing_s/validate"] = timing["validate"]
            metrics["training/global_step"] = self.global_steps
            metrics["training/epoch"] = self.train_batches.epoch
            logger.log(metrics, step=self.global_steps)
            progress.update(1)
        progress.close()
        logger.finish()
