"""Supervised fine-tuning on one FSDP2 rank: a causal LM trained on the response tokens of its rows."""

import os

import torch
import torch.distributed as dist
from transformers import AutoTokenizer

from verl.algos.core_algos import agg_loss
from verl.config.sft import SFTConfig
from verl.protocol import DataProto
from verl.single_controller import Dispatch, Worker, register
from verl.utils.checkpoint import load_checkpoint, save_checkpoint
from verl.utils.fsdp_utils import build_optimizer, move_optimizer_state, moves_optimizer, shard_model
from verl.utils.micro_batch import loss_denominator, micro_weight, optimizer_step
from verl.utils.torch_functional import logprobs_from_logits
from verl.workers.fsdp_workers import load_causal_lm


def next_token_nll(
    logits: torch.Tensor, labels: torch.Tensor, loss_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Negative log-likelihood of each next token and the mask of those trained on, both [B, T-1]:
    position t predicts label t+1, which counts where loss_mask t+1 is 1."""
    return -logprobs_from_logits(logits[:, :-1], labels[:, 1:]), loss_mask[:, 1:].float()


def micro_nll(model, micro: DataProto) -> tuple[torch.Tensor, torch.Tensor]:
    # Rows are right-padded to the whole batch's longest: the micro-batch needs only its own width.
    width = int(micro.batch["attention_mask"].sum(-1).max())
    inputs = {k: micro.batch[k][:, :width] for k in ("input_ids", "attention_mask", "position_ids")}
    logits = model(**inputs, use_cache=False).logits
    return next_token_nll(logits, inputs["input_ids"], micro.batch["loss_mask"][:, :width])


def train_on_batch(
    model, optimizer, lr_scheduler, data: DataProto, micro_batch_size: int, clip_grad: float, device: str
) -> dict[str, float]:
    """One optimizer and one LR-schedule step on the mean loss over every loss token of the
    global batch (all ranks): each micro-batch counts by its share of those tokens."""
    model.train()
    denominator = loss_denominator(data.batch["loss_mask"][:, 1:], "token-mean")
    loss_sum = torch.zeros((), dtype=torch.float64)
    for micro in data.split(micro_batch_size):
        nll, mask = micro_nll(model, micro.to(device))
        (agg_loss(nll, mask, "token-mean") * micro_weight(mask, "token-mean", denominator)).backward()
        loss_sum += (nll.detach() * mask).sum().double().cpu()
    if dist.is_initialized():
        dist.all_reduce(loss_sum)
    metrics = {
        "train/loss": float(loss_sum) / max(denominator, 1.0),
        "train/grad_norm": optimizer_step(model, optimizer, clip_grad),
        "train/lr": lr_scheduler.get_last_lr()[0],
    }
    lr_scheduler.step()
    return metrics


@torch.no_grad()
def row_losses(model, data: DataProto, micro_batch_size: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's summed next-token NLL over its loss tokens, and the number of those tokens."""
    model.eval()
    sums, counts = [], []
    for micro in data.split(micro_batch_size):
        nll, mask = micro_nll(model, micro.to(device))
        sums.append((nll * mask).sum(-1).float().cpu())
        counts.append(mask.sum(-1).cpu())
    return torch.cat(sums), torch.cat(counts)


class SFTWorker(Worker):
    def __init__(self, config: SFTConfig):
        super().__init__()
        self.config = config

    @register(Dispatch.ONE_TO_ALL)
    def init_model(self) -> None:
        cfg = self.config
        torch.manual_seed(cfg.trainer.seed + self.rank)
        self.tokenizer = AutoTokenizer.from_pretrained(
            os.path.expanduser(cfg.model.path), trust_remote_code=cfg.model.trust_remote_code
        )
        model = load_causal_lm(
            cfg.model.path,
            cfg.model.trust_remote_code,
            cfg.model.enable_gradient_checkpointing,
            weights=self.rank == 0,
            attn_implementation=cfg.model.attn_implementation,
            device=self.device,
        )
        self.model = shard_model(model, cfg.fsdp_config, self.device, self.world_size)
        self.optimizer, self.lr_scheduler = build_optimizer(self.model, cfg.optim)
        self._place_optimizer("cpu")

    def _place_optimizer(self, device: str) -> None:
        # With optimizer_offload on GPU runs the optimizer state waits on CPU between steps.
        if moves_optimizer(self.config.fsdp_config, self.device):
            move_optimizer_state(self.optimizer, device)

    @register(Dispatch.DP_COMPUTE_PROTO)
    def train_step(self, data: DataProto) -> DataProto:
        self._place_optimizer("cuda")
        metrics = train_on_batch(
            self.model,
            self.optimizer,
            self.lr_scheduler,
            data,
            self.config.data.micro_batch_size_per_gpu,
            self.config.optim.clip_grad,
            self.device,
        )
        self._place_optimizer("cpu")
        return DataProto(meta_info={"metrics": metrics})

    @register(Dispatch.DP_COMPUTE_PROTO)
    def validate(self, data: DataProto) -> DataProto:
        """Per-row sums rather than a mean, so the rows the dispatcher pads a batch with drop out
        before the driver averages."""
        loss_sum, loss_tokens = row_losses(self.model, data, self.config.data.micro_batch_size_per_gpu, self.device)
        return DataProto.from_dict(tensors={"loss_sum": loss_sum, "loss_tokens": loss_tokens})

    @register(Dispatch.ONE_TO_ALL)
    def save_checkpoint(self, path: str) -> None:
        save_checkpoint(path, self.model, self.optimizer, self.lr_scheduler, tokenizer=self.tokenizer, save_hf=True)

    @register(Dispatch.ONE_TO_ALL)
    def load_checkpoint(self, path: str) -> None:
        load_checkpoint(path, self.model, self.optimizer, self.lr_scheduler)
        self._place_optimizer("cpu")
