"""Saving and restoring a sharded model with its optimizer, LR schedule and RNG states.

Layout of one role's folder (``global_step_N/actor``):
  dcp/                     model + optimizer, torch.distributed.checkpoint format
  extra_state_rank_R.pt    LR scheduler and RNG states of rank R
  huggingface/             full weights + tokenizer, loadable by ``from_pretrained`` (optional)
  lora_adapter/            with LoRA: the adapters alone, loadable by peft's ``PeftModel.from_pretrained``
                           (beside huggingface/, which then holds the merged weights)

Frozen weights (a LoRA base model) stay out of dcp/: they are the model the run starts from.
"""

import logging
import os
import random
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from verl.utils.fsdp_utils import full_state_dict
from verl.utils.lora import has_adapters, lora_scalings, merged_weights

LATEST_FILE = "latest_checkpointed_iteration.txt"
_TRAINED = StateDictOptions(ignore_frozen_params=True)
logger = logging.getLogger(__name__)


def checkpoint_dir(local_dir: str, step: int) -> str:
    return os.path.join(local_dir, f"global_step_{step}")


def mark_latest(local_dir: str, step: int) -> None:
    """Records ``step`` as the checkpoint to resume from. Written last and atomically, so an
    interrupted save is never picked up by resume."""
    latest = os.path.join(local_dir, LATEST_FILE)
    with open(latest + ".tmp", "w") as f:
        f.write(str(step))
    os.replace(latest + ".tmp", latest)


def resume_dirs(resume_mode: str, resume_from_path: str | None, local_dir: str) -> list[str]:
    """The ``global_step_N`` folders ``trainer.resume_mode`` may resume from, in the order to try
    them; empty to start afresh. auto: the checkpoint marked latest under ``local_dir``, then every
    earlier one, newest first (a fallback if the latest turns out unreadable); resume_path:
    ``resume_from_path`` alone."""
    if resume_mode == "disable":
        return []
    if resume_mode == "resume_path":
        if not resume_from_path or not os.path.isdir(resume_from_path):
            raise FileNotFoundError(f"trainer.resume_from_path={resume_from_path!r} is not a checkpoint folder")
        return [resume_from_path]
    latest = os.path.join(local_dir, LATEST_FILE)
    if not os.path.exists(latest):
        return []
    with open(latest) as f:
        newest = int(f.read().strip())
    earlier = sorted(
        (int(name.removeprefix("global_step_")) for name in os.listdir(local_dir) if _STEP_DIR.fullmatch(name)),
        reverse=True,
    )
    return [checkpoint_dir(local_dir, step) for step in [newest, *(s for s in earlier if s < newest)]]


_STEP_DIR = re.compile(r"global_step_\d+")


def load_first(step_dirs: list[str], load: Callable[[str], None]) -> str | None:
    """Calls ``load`` on each folder in turn until one loads; returns it (None when there is none).
    A folder that fails is skipped with a warning; when every one fails, the newest error is raised."""
    errors: list[Exception] = []
    for step_dir in step_dirs:
        try:
            load(step_dir)
            return step_dir
        except Exception as e:  # a torn or corrupted checkpoint fails in many ways; the next one is tried
            errors.append(e)
            logger.warning("could not resume from %s (%s: %s); trying the one before", step_dir, type(e).__name__, e)
    if errors:
        raise RuntimeError(
            f"no checkpoint could be loaded from {step_dirs}; the newest failed with: {errors[0]}"
        ) from errors[0]
    return None


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    # Only a process already using CUDA has a CUDA generator to save: asking one that does not (the
    # trainer's driver) would open a CUDA context, and take device memory, for nothing.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.set_rng_state(state["cuda"])


def lora_base(model) -> str | None:
    """The base model a model's LoRA adapters were added to (its path), or None without adapters."""
    if model is None or not has_adapters(model):
        return None
    name = model.get_base_model().config._name_or_path  # set alike on ranks that built a skeleton
    return os.path.realpath(name) if os.path.exists(name) else name


def save_checkpoint(path: str, model, optimizer=None, lr_scheduler=None, tokenizer=None, save_hf: bool = False) -> None:
    """Collective: every rank calls it with its shard."""
    rank = dist.get_rank()
    os.makedirs(path, exist_ok=True)
    state: dict[str, Any] = {"model": get_model_state_dict(model, options=_TRAINED)}
    if optimizer is not None:
        state["optimizer"] = get_optimizer_state_dict(model, optimizer)
    dcp.save(state, checkpoint_id=os.path.join(path, "dcp"))
    extra = {
        "rng": rng_state(),
        "lr_scheduler": lr_scheduler.state_dict() if lr_scheduler is not None else None,
        "lora_base": lora_base(model),  # dcp/ holds the adapters alone: resume needs the same base model
    }
    torch.save(extra, os.path.join(path, f"extra_state_rank_{rank}.pt"))
    if save_hf:
        weights = full_state_dict(model, rank0_only_on_cpu=True)
        if rank == 0:
            hf_dir = os.path.join(path, "huggingface")
            if has_adapters(model):
                model.save_pretrained(os.path.join(path, "lora_adapter"), state_dict=weights)
                merged = dict(merged_weights(weights.items(), lora_scalings(model)))
                model.get_base_model().save_pretrained(hf_dir, state_dict=merged)
            else:
                model.save_pretrained(hf_dir, state_dict=weights)
            if tokenizer is not None:
                tokenizer.save_pretrained(hf_dir)
    dist.barrier()


def load_checkpoint(path: str, model, optimizer=None, lr_scheduler=None) -> None:
    """Collective counterpart of :func:`save_checkpoint`. Any number of ranks can load it: the weights
    and optimizer state are resharded by DCP; the LR schedule is every rank's; a rank restores its
    RNG state where the checkpoint has one for its rank, and otherwise keeps its fresh seed."""
    saved_ranks = sorted(
        int(m.group(1)) for name in os.listdir(path) if (m := re.fullmatch(r"extra_state_rank_(\d+)\.pt", name))
    )
    if saved_ranks != list(range(len(saved_ranks))) or not saved_ranks:
        # Every rank sees the same files, so every rank refuses here, before the collective load.
        raise FileNotFoundError(f"{path}: extra_state_rank_*.pt of ranks {saved_ranks}, not 0..N-1: an incomplete save")
    rank = dist.get_rank()
    if len(saved_ranks) != dist.get_world_size() and rank == 0:
        logger.warning(
            "%s was saved by %d ranks and is loaded by %d: the weights and optimizer state are resharded; "
            "sampling will not repeat what an uninterrupted run would have drawn",
            path,
            len(saved_ranks),
            dist.get_world_size(),
        )
    own = rank in saved_ranks
    extra = torch.load(os.path.join(path, f"extra_state_rank_{rank if own else 0}.pt"), weights_only=False)
    if extra.get("lora_base") != lora_base(model):  # read alike on every rank: all refuse together
        raise ValueError(
            f"{path} holds LoRA adapters trained on {extra.get('lora_base')!r}; this run's model is "
            f"{lora_base(model)!r}: set actor_rollout_ref.model.path to the model the adapters were trained on"
        )
    state: dict[str, Any] = {"model": get_model_state_dict(model, options=_TRAINED)}
    if optimizer is not None:
        state["optimizer"] = get_optimizer_state_dict(model, optimizer)
    dcp.load(state, checkpoint_id=os.path.join(path, "dcp"))
    # Not strict: the frozen weights are left out by design (the keys themselves came from the model).
    set_model_state_dict(model, state["model"], options=StateDictOptions(strict=False))
    if optimizer is not None:
        set_optimizer_state_dict(model, optimizer, state["optimizer"])
    if lr_scheduler is not None and extra["lr_scheduler"] is not None:
        lr_scheduler.load_state_dict(extra["lr_scheduler"])
    if own:
        set_rng_state(extra["rng"])
