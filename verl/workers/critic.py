"""Value-function computations on one FSDP rank: values of response positions and the update."""

from typing import Any

import torch

from verl.algos import core_algos
from verl.config import CriticConfig
from verl.protocol import DataProto
from verl.utils.batch_schema import Key
from verl.utils.micro_batch import (
    loss_denominator,
    micro_batches,
    micro_weight,
    optimizer_step,
    pack_rows,
    pad_right,
    trim_padding,
    unpack,
    unsort,
)


def response_values(model, data: DataProto, response_length: int, remove_padding: bool = False) -> torch.Tensor:
    """Value of the state before each response token, [B, kept response columns]; zero where there
    is no token. ``remove_padding`` runs the model on the real tokens only, packed in one row."""
    if remove_padding:
        inputs, predictors, real = pack_rows(data, response_length)
        values = model(**inputs, use_cache=False).logits[0, predictors, 0].float()
        return unpack(values, real)
    inputs, kept = trim_padding(data, response_length)
    values = model(**inputs, use_cache=False).logits.squeeze(-1)
    return values[:, -kept - 1 : -1].float()


class DataParallelPPOCritic:
    def __init__(
        self,
        config: CriticConfig,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        lr_scheduler: Any,
        device: str = "cpu",
        remove_padding: bool = False,
    ):
        self.config = config
        self.remove_padding = remove_padding
        self.model = model
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.device = device

    @torch.no_grad()
    def compute_values(self, data: DataProto) -> torch.Tensor:
        self.model.eval()
        width = data.batch[Key.RESPONSES].shape[1]
        cfg = self.config
        order = micro_batches(data, cfg.ppo_micro_batch_size_per_gpu, cfg.token_budget(forward_only=True))
        values = []
        for rows in order:
            micro = data[rows].to(self.device)
            values.append(pad_right(response_values(self.model, micro, width, self.remove_padding), width).cpu())
        return unsort(values, order) * data.batch[Key.RESPONSE_MASK].float()

    def update_critic(self, data: DataProto, mini_batch_size: int) -> dict[str, list[float]]:
        cfg = self.config
        self.model.train()
        metrics: dict[str, list[float]] = {}
        data = data.select(
            batch_keys=[
                Key.RESPONSES,
                Key.INPUT_IDS,
                Key.ATTENTION_MASK,
                Key.POSITION_IDS,
                Key.RESPONSE_MASK,
                Key.VALUES,
                Key.RETURNS,
            ]
        )
        for _ in range(cfg.ppo_epochs):
            for mini in data.split(mini_batch_size):
                self.optimizer.zero_grad()
                denominator = loss_denominator(mini.batch[Key.RESPONSE_MASK], cfg.loss_agg_mode)
                for rows in micro_batches(mini, cfg.ppo_micro_batch_size_per_gpu, cfg.token_budget()):
                    micro = mini[rows].to(self.device)
                    vpreds = response_values(
                        self.model, micro, micro.batch[Key.RESPONSES].shape[1], self.remove_padding
                    )
                    kept = vpreds.shape[1]
                    mask = micro.batch[Key.RESPONSE_MASK][:, :kept].float()
                    vf_loss, vf_clipfrac = core_algos.compute_value_loss(
                        vpreds=vpreds,
                        returns=micro.batch[Key.RETURNS][:, :kept],
                        values=micro.batch[Key.VALUES][:, :kept],
                        response_mask=mask,
                        cliprange_value=cfg.cliprange_value,
                        loss_agg_mode=cfg.loss_agg_mode,
                    )
                    (vf_loss * micro_weight(mask, cfg.loss_agg_mode, denominator)).backward()
                    metrics.setdefault("critic/vf_loss", []).append(vf_loss.item())
                    metrics.setdefault("critic/vf_clipfrac", []).append(vf_clipfrac.item())
                    metrics.setdefault("critic/vpred_mean", []).append(
                        (vpreds * mask).sum().item() / max(mask.sum().item(), 1.0)
                    )
                metrics.setdefault("critic/grad_norm", []).append(
                    optimizer_step(self.model, self.optimizer, cfg.grad_clip)
                )
        metrics["critic/lr"] = [self.lr_scheduler.get_last_lr()[0]]
        self.lr_scheduler.step()  # the schedule counts training steps, not mini-batches
        return metrics
