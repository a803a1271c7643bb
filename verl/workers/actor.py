"""Policy computations on one FSDP rank: log-probs of responses and the PPO update."""

from typing import Any

import torch

from verl.protocol import DataProto, RolloutSettings
from verl.trainer import core_algos
from verl.trainer.config import ActorConfig, RefConfig
from verl.utils.torch_functional import entropy_from_logits, logprobs_from_logits
from verl.workers.micro_batch import loss_denominator, micro_weight, optimizer_step, pad_right, trim_padding


def response_logits(model, data: DataProto, response_length: int, temperature: float) -> torch.Tensor:
    """Logits predicting each response token, [B, kept response columns, V], divided by the
    sampling temperature so log-probs match the distribution the rollout sampled from."""
    inputs, kept = trim_padding(data, response_length)
    logits = model(**inputs, use_cache=False).logits
    logits = logits[:, -kept - 1 : -1].float()
    return logits / temperature if temperature > 0 else logits


class DataParallelPPOActor:
    def __init__(
        self,
        config: ActorConfig | RefConfig,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        lr_scheduler: Any = None,
        device: str = "cpu",
    ):
        self.config = config  # a RefConfig for a frozen reference, which is never updated
        self.model = model
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.device = device

    @torch.no_grad()
    def compute_log_prob(
        self, data: DataProto, micro_batch_size: int, temperature: float, with_entropy: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns log-probs [B, R] of the response tokens (and their entropies) in micro-batches."""
        self.model.eval()
        width = data.batch["responses"].shape[1]
        log_probs, entropies = [], []
        for micro in data.split(micro_batch_size):
            micro = micro.to(self.device)
            logits = response_logits(self.model, micro, width, temperature)
            labels = micro.batch["responses"][:, : logits.shape[1]]
            log_probs.append(pad_right(logprobs_from_logits(logits, labels), width).cpu())
            if with_entropy:
                entropies.append(pad_right(entropy_from_logits(logits), width).cpu())
        return torch.cat(log_probs), (torch.cat(entropies) if with_entropy else None)

    def update_policy(self, data: DataProto, mini_batch_size: int, temperature: float) -> dict[str, list[float]]:
        """PPO epochs over mini-batches; one optimizer step per mini-batch."""
        cfg, optimizer, scheduler = self.config, self.optimizer, self.lr_scheduler
        if not isinstance(cfg, ActorConfig) or optimizer is None:
            raise TypeError("a frozen reference policy (RefConfig, no optimizer) is never updated")
        self.model.train()
        metrics: dict[str, list[float]] = {}
        keys = [
            "responses",
            "input_ids",
            "attention_mask",
            "position_ids",
            "response_mask",
            "old_log_probs",
            "advantages",
        ] + (["ref_log_prob"] if cfg.use_kl_loss else [])
        data = data.select(batch_keys=keys)
        for epoch in range(cfg.ppo_epochs):
            if cfg.shuffle:  # a different order every step and epoch, reproducible on resume
                generator = torch.Generator().manual_seed(RolloutSettings.of(data).step * 1000 + epoch)
                data = data[torch.randperm(len(data), generator=generator)]
            for mini in data.split(mini_batch_size):
                optimizer.zero_grad()
                denominator = loss_denominator(mini.batch["response_mask"], cfg.loss_agg_mode)
                for micro in mini.split(cfg.ppo_micro_batch_size_per_gpu):
                    micro = micro.to(self.device)
                    step = self._micro_step(cfg, micro, temperature, denominator)
                    for k, v in step.items():
                        metrics.setdefault(k, []).append(v)
                metrics.setdefault("actor/grad_norm", []).append(optimizer_step(self.model, optimizer, cfg.grad_clip))
        metrics["actor/lr"] = [scheduler.get_last_lr()[0]]
        scheduler.step()  # the schedule counts training steps, not mini-batches
        return metrics

    def _micro_step(
        self, cfg: ActorConfig, micro: DataProto, temperature: float, denominator: float
    ) -> dict[str, float]:
        logits = response_logits(self.model, micro, micro.batch["responses"].shape[1], temperature)
        kept = logits.shape[1]
        b = {k: micro.batch[k][:, :kept] for k in ("responses", "response_mask", "old_log_probs", "advantages")}
        mask = b["response_mask"].float()
        log_prob = logprobs_from_logits(logits, b["responses"])
        pg_loss, pg_clipfrac, ppo_kl, pg_clipfrac_lower = core_algos.compute_policy_loss(
            old_log_prob=b["old_log_probs"],
            log_prob=log_prob,
            advantages=b["advantages"],
            response_mask=mask,
            cliprange=cfg.clip_ratio,
            cliprange_low=cfg.clip_ratio_low,
            cliprange_high=cfg.clip_ratio_high,
            clip_ratio_c=cfg.clip_ratio_c,
            loss_agg_mode=cfg.loss_agg_mode,
        )
        loss = pg_loss
        out = {
            "actor/pg_loss": pg_loss.item(),
            "actor/pg_clipfrac": pg_clipfrac.item(),
            "actor/ppo_kl": ppo_kl.item(),
            "actor/pg_clipfrac_lower": pg_clipfrac_lower.item(),
        }
        if cfg.entropy_coeff != 0:
            entropy = core_algos.compute_entropy_loss(logits, mask, cfg.loss_agg_mode)
            loss = loss - cfg.entropy_coeff * entropy
            out["actor/entropy_loss"] = entropy.item()
        if cfg.use_kl_loss:
            kl = core_algos.kl_penalty(log_prob, micro.batch["ref_log_prob"][:, :kept], cfg.kl_loss_type)
            kl_loss = core_algos.agg_loss(kl, mask, cfg.loss_agg_mode)
            loss = loss + cfg.kl_loss_coef * kl_loss  # a penalty: added, never subtracted
            out["actor/kl_loss"] = kl_loss.item()
            out["actor/kl_coef"] = cfg.kl_loss_coef
        (loss * micro_weight(mask, cfg.loss_agg_mode, denominator)).backward()
        return out
