"""Policy computations on one FSDP rank: log-probs of responses and the PPO update."""

import torch
import torch.distributed as dist

from verl.protocol import DataProto
from verl.trainer import core_algos
from verl.utils.torch_functional import entropy_from_logits, logprobs_from_logits


def trim_padding(data: DataProto, response_length: int) -> tuple[dict, int]:
    """Drops the columns that are padding in every row of a micro-batch (left of the prompts, right
    of the responses), returning model inputs and the number of response columns kept."""
    mask = data.batch["attention_mask"]
    prompt_width = mask.shape[1] - response_length
    used = mask.any(dim=0).nonzero().flatten()
    start = min(int(used[0]), prompt_width - 1) if len(used) else prompt_width - 1
    kept_response = max(int(used[-1]) + 1 - prompt_width, 1) if len(used) else 1
    end = prompt_width + kept_response
    inputs = {k: data.batch[k][:, start:end] for k in ("input_ids", "attention_mask", "position_ids")}
    return inputs, kept_response


def response_logits(model, data: DataProto, response_length: int, temperature: float) -> torch.Tensor:
    """Logits predicting each response token, [B, kept response columns, V], divided by the
    sampling temperature so log-probs match the distribution the rollout sampled from."""
    inputs, kept = trim_padding(data, response_length)
    logits = model(**inputs, use_cache=False).logits
    logits = logits[:, -kept - 1 : -1].float()
    return logits / temperature if temperature > 0 else logits


def pad_right(values: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(values, (0, width - values.shape[1]))


class DataParallelPPOActor:
    def __init__(self, config, model, optimizer=None, lr_scheduler=None, device="cpu"):
        self.config = config  # ActorConfig (or RefConfig for a frozen reference)
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
        cfg = self.config
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
                generator = torch.Generator().manual_seed(data.meta_info.get("global_steps", 0) * 1000 + epoch)
                data = data[torch.randperm(len(data), generator=generator)]
            for mini in data.split(mini_batch_size):
                self.optimizer.zero_grad()
                denominator = loss_denominator(mini.batch["response_mask"], cfg.loss_agg_mode)
                for micro in mini.split(cfg.ppo_micro_batch_size_per_gpu):
                    micro = micro.to(self.device)
                    step = self._micro_step(micro, temperature, denominator)
                    for k, v in step.items():
                        metrics.setdefault(k, []).append(v)
                metrics.setdefault("actor/grad_norm", []).append(
                    optimizer_step(self.model, self.optimizer, cfg.grad_clip)
                )
        metrics["actor/lr"] = [self.lr_scheduler.get_last_lr()[0]]
        self.lr_scheduler.step()  # the schedule counts training steps, not mini-batches
        return metrics

    def _micro_step(self, micro: DataProto, temperature: float, denominator: float) -> dict[str, float]:
        cfg = self.config
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


def loss_denominator(response_mask: torch.Tensor, loss_agg_mode: str) -> float:
    """The mini-batch's valid tokens (token-mean) or non-empty rows (seq-mean modes) summed over all
    data-parallel ranks, so accumulated micro-batch losses equal the loss of the whole mini-batch."""
    mask = response_mask.float()
    local = mask.sum() if loss_agg_mode == "token-mean" else (mask.sum(-1) > 0).float().sum()
    if dist.is_initialized():
        dist.all_reduce(local)
    return float(local)


def micro_weight(mask: torch.Tensor, loss_agg_mode: str, denominator: float) -> float:
    """Share of a micro-batch in its mini-batch. FSDP averages gradients over ranks, so the share is
    scaled by the world size to turn that average back into a sum."""
    local = mask.sum() if loss_agg_mode == "token-mean" else (mask.sum(-1) > 0).float().sum()
    world = dist.get_world_size() if dist.is_initialized() else 1
    return float(local) / max(denominator, 1.0) * world


def optimizer_step(model, optimizer, max_norm: float) -> float:
    """Clips gradients to ``max_norm`` and steps; skips the step when the norm is not finite, which
    would corrupt the weights. Returns the norm before clipping."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
    if torch.isfinite(norm):
        optimizer.step()
    optimizer.zero_grad()
    return float(norm)
