"""Policy computations on one FSDP rank: log-probs of responses and the PPO update."""

from typing import Any

import torch

from verl.algos import core_algos
from verl.config import ActorConfig, RefConfig
from verl.protocol import DataProto, RolloutSettings
from verl.utils.batch_schema import Key
from verl.utils.micro_batch import (
    loss_denominator,
    micro_batches,
    micro_weight,
    optimizer_step,
    pack_rows,
    pad_right,
    token_slots,
    trim_padding,
    unpack,
    unsort,
)
from verl.utils.torch_functional import logprobs_and_entropy, logprobs_from_logits


def response_logits(model, data: DataProto, response_length: int) -> torch.Tensor:
    """Logits predicting each response token, [B, kept response columns, V]. The output layer runs
    on those positions only (``logits_to_keep``), not on the prompt's."""
    inputs, kept = trim_padding(data, response_length)
    logits = model(**inputs, use_cache=False, logits_to_keep=kept + 1).logits
    return logits[:, -kept - 1 : -1]  # also right for a model that takes but ignores logits_to_keep


def response_log_probs(
    model,
    data: DataProto,
    temperature: float,
    remove_padding: bool,
    entropy_grad: bool = True,
    with_entropy: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (and entropies) of the response tokens, [B, kept response columns] each, zero where
    there is no token. ``remove_padding`` runs the model on the real tokens only, packed in one row."""
    responses = data.batch[Key.RESPONSES]
    if remove_padding:
        inputs, predictors, real = pack_rows(data, responses.shape[1])
        logits = model(**inputs, use_cache=False, logits_to_keep=predictors).logits[0]
        if logits.shape[0] != len(predictors):  # a model that takes but ignores logits_to_keep
            logits = logits[predictors]
        labels = responses[real]
    else:
        logits = response_logits(model, data, responses.shape[1])
        labels = responses[:, : logits.shape[1]]
    # divided by the sampling temperature: the log-probs of the distribution the rollout sampled from
    logits = logits.float()
    logits = logits / temperature if temperature > 0 and temperature != 1 else logits
    if with_entropy:
        log_prob, entropy = logprobs_and_entropy(logits, labels, entropy_grad)
    else:
        log_prob, entropy = logprobs_from_logits(logits, labels), None
    if not remove_padding:
        return log_prob, entropy
    return unpack(log_prob, real), (unpack(entropy, real) if entropy is not None else None)


class DataParallelPPOActor:
    def __init__(
        self,
        config: ActorConfig | RefConfig,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        lr_scheduler: Any = None,
        device: str = "cpu",
        remove_padding: bool = False,
    ):
        self.config = config  # a RefConfig for a frozen reference, which is never updated
        self.remove_padding = remove_padding
        self.model = model
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.device = device

    @torch.no_grad()
    def compute_log_prob(
        self,
        data: DataProto,
        micro_batch_size: int,
        temperature: float,
        with_entropy: bool = False,
        max_token_len: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns log-probs [B, R] of the response tokens (and their entropies), in micro-batches of
        ``micro_batch_size`` rows or, with ``max_token_len``, of that many tokens."""
        self.model.eval()
        width = data.batch[Key.RESPONSES].shape[1]
        order = micro_batches(data, micro_batch_size, max_token_len)
        log_probs, entropies = [], []
        for rows in order:
            micro = data[rows].to(self.device)
            log_prob, entropy = response_log_probs(
                self.model, micro, temperature, self.remove_padding, with_entropy=with_entropy
            )
            log_probs.append(pad_right(log_prob, width).cpu())
            if entropy is not None:
                entropies.append(pad_right(entropy, width).cpu())
        return unsort(log_probs, order), (unsort(entropies, order) if with_entropy else None)

    def update_policy(
        self, data: DataProto, mini_batch_size: int, temperature: float, report_first_pass: bool = False
    ) -> tuple[dict[str, list[float]], DataProto | None]:
        """PPO epochs over mini-batches; one optimizer step per mini-batch.

        Without ``old_log_probs`` in ``data`` the update must be on-policy (one epoch, one
        mini-batch): the old log-probs are then the current policy's own, taken from the update's
        forward pass instead of a separate one. With ``report_first_pass`` the log-probs and
        entropies of that first pass (the first mini-batch of the first epoch: the policy before any
        step) are returned in batch order, with ``measured`` marking their rows (all rows when
        on-policy): the old log-probs the update computed, or the actor's own to compare the
        rollout's with; else None."""
        cfg, optimizer, scheduler = self.config, self.optimizer, self.lr_scheduler
        if not isinstance(cfg, ActorConfig) or optimizer is None:
            raise TypeError("a frozen reference policy (RefConfig, no optimizer) is never updated")
        on_policy = Key.OLD_LOG_PROBS not in data.batch.keys()
        if on_policy and (cfg.ppo_epochs != 1 or len(data) > mini_batch_size):
            raise ValueError("old_log_probs can be left out only for one epoch over one mini-batch")
        policy_loss = core_algos.get_policy_loss_fn(cfg.policy_loss.loss_mode)
        self.model.train()
        metrics: dict[str, list[float]] = {}
        keys = [Key.RESPONSES, Key.INPUT_IDS, Key.ATTENTION_MASK, Key.POSITION_IDS, Key.RESPONSE_MASK, Key.ADVANTAGES]
        keys += [] if on_policy else [Key.OLD_LOG_PROBS]
        keys += [Key.REF_LOG_PROB] if cfg.use_kl_loss else []
        data = data.select(batch_keys=keys)
        width = data.batch[Key.RESPONSES].shape[1]
        positions = torch.arange(len(data))
        kept: dict[str, list[torch.Tensor]] = {Key.OLD_LOG_PROBS: [], Key.ENTROPYS: [], "rows": []}
        real_tokens = slots = 0
        for epoch in range(cfg.ppo_epochs):
            if cfg.shuffle:  # a different order every step and epoch, reproducible on resume
                generator = torch.Generator().manual_seed(RolloutSettings.of(data).step * 1000 + epoch)
                permutation = torch.randperm(len(data), generator=generator)
                data, positions = data[permutation], positions[permutation]
            for start in range(0, len(data), mini_batch_size):
                mini = data[start : start + mini_batch_size]
                optimizer.zero_grad()
                denominator = loss_denominator(mini.batch[Key.RESPONSE_MASK], cfg.loss_agg_mode)
                for rows in micro_batches(mini, cfg.ppo_micro_batch_size_per_gpu, cfg.token_budget()):
                    micro = mini[rows].to(self.device)
                    real_tokens += int(micro.batch[Key.ATTENTION_MASK].sum())
                    slots += token_slots(micro, width, self.remove_padding)
                    step, log_prob, entropy = self._micro_step(cfg, policy_loss, micro, temperature, denominator)
                    for k, v in step.items():
                        metrics.setdefault(k, []).append(v)
                    if report_first_pass and epoch == 0 and start == 0:  # no optimizer step yet
                        kept[Key.OLD_LOG_PROBS].append(pad_right(log_prob, width).cpu())
                        kept[Key.ENTROPYS].append(pad_right(entropy, width).cpu())
                        kept["rows"].append(positions[start + rows])
                metrics.setdefault("actor/grad_norm", []).append(optimizer_step(self.model, optimizer, cfg.grad_clip))
        metrics["actor/lr"] = [scheduler.get_last_lr()[0]]
        metrics["actor/padding_fraction"] = [1 - real_tokens / max(slots, 1)]  # of the positions computed
        scheduler.step()  # the schedule counts training steps, not mini-batches
        if not report_first_pass:
            return metrics, None
        measured = torch.cat(kept["rows"])
        tensors = {Key.MEASURED: torch.zeros(len(data), dtype=torch.bool).index_fill_(0, measured, True)}
        for k in (Key.OLD_LOG_PROBS, Key.ENTROPYS):
            tensors[k] = torch.zeros((len(data), width), dtype=kept[k][0].dtype)
            tensors[k][measured] = torch.cat(kept[k])
        return metrics, DataProto.from_dict(tensors=tensors)

    def _micro_step(
        self,
        cfg: ActorConfig,
        policy_loss: core_algos.PolicyLoss,
        micro: DataProto,
        temperature: float,
        denominator: float,
    ) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
        """Accumulates one micro-batch's gradient; returns its metrics, and its log-probs and
        entropies (detached, the kept response columns)."""
        log_prob, entropy = response_log_probs(
            self.model, micro, temperature, self.remove_padding, entropy_grad=cfg.entropy_coeff != 0
        )
        assert entropy is not None  # with_entropy is on by default
        kept = log_prob.shape[1]
        b = {k: micro.batch[k][:, :kept] for k in (Key.RESPONSE_MASK, Key.ADVANTAGES)}
        mask = b[Key.RESPONSE_MASK].float()
        # on-policy: the old policy is this one, so the ratio is exactly 1 with the gradient of log π
        old_log_prob = micro.batch[Key.OLD_LOG_PROBS][:, :kept] if Key.OLD_LOG_PROBS in micro.batch.keys() else None
        pg_loss, pg_clipfrac, ppo_kl, pg_clipfrac_lower = policy_loss(
            old_log_prob=log_prob.detach() if old_log_prob is None else old_log_prob,
            log_prob=log_prob,
            advantages=b[Key.ADVANTAGES],
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
            entropy_loss = core_algos.agg_loss(entropy, mask, cfg.loss_agg_mode)
            loss = loss - cfg.entropy_coeff * entropy_loss
            out["actor/entropy_loss"] = entropy_loss.item()
        if cfg.use_kl_loss:
            kl = core_algos.kl_penalty(log_prob, micro.batch[Key.REF_LOG_PROB][:, :kept], cfg.kl_loss_type)
            kl_loss = core_algos.agg_loss(kl, mask, cfg.loss_agg_mode)
            loss = loss + cfg.kl_loss_coef * kl_loss  # a penalty: added, never subtracted
            out["actor/kl_loss"] = kl_loss.item()
            out["actor/kl_coef"] = cfg.kl_loss_coef
        (loss * micro_weight(mask, cfg.loss_agg_mode, denominator)).backward()
        return out, log_prob.detach(), entropy.detach()
