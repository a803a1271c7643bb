"""Supervised fine-tuning with the single controller: the driver feeds batches, Ray workers train."""

import os

import torch
from tqdm import tqdm

from verl.config.sft import SFTConfig
from verl.single_controller import RayClassWithInitArgs, RayResourcePool, RayWorkerGroup, Worker
from verl.trainer.data_loader import ResumableBatches, validation_batches
from verl.trainer.metrics import timer
from verl.trainer.startup import worker_log_dir
from verl.utils.checkpoint import checkpoint_dir, load_first, mark_latest, resume_dirs, rng_state, set_rng_state
from verl.utils.sft_dataset import SFTDataset
from verl.utils.tracking import Tracking, plain_config


class RaySFTTrainer:
    def __init__(self, config: SFTConfig, train_dataset: SFTDataset, val_dataset: SFTDataset | None):
        self.config = config
        self.val_dataset = val_dataset
        self.train_batches = ResumableBatches(
            train_dataset,
            config.data.train_batch_size,
            config.data.shuffle,
            config.data.seed,
            collate_fn=train_dataset.collate,
        )
        epochs_steps = self.train_batches.batches_per_epoch * config.trainer.total_epochs
        self.total_training_steps = config.trainer.total_training_steps or epochs_steps  # None: by epochs
        config.optim.total_training_steps = self.total_training_steps
        self.global_steps = 0

    def init_workers(self, worker_cls: type[Worker], device: str) -> None:
        """Starts ``worker_cls`` (the entry point's SFT worker) on every rank."""
        cfg = self.config.trainer
        self.resource_pool = RayResourcePool([cfg.n_gpus_per_node] * cfg.nnodes, use_gpu=device == "cuda")
        self.worker_group = RayWorkerGroup(
            self.resource_pool,
            RayClassWithInitArgs(worker_cls, (self.config,)),
            device,
            {"TOKENIZERS_PARALLELISM": "false"},
            worker_log_dir(self.config.ray_init, cfg),
            name="sft",
        )
        self.worker_group.init_model()

    def shutdown(self) -> None:
        """Ends the workers and frees their slots, so another run can start in the same Ray session."""
        self.worker_group.shutdown()
        self.resource_pool.release()

    def validate(self) -> dict[str, float]:
        """Mean loss over every loss token of the validation set."""
        if self.val_dataset is None:
            raise ValueError("validate() needs data.val_files")
        loss_sum, tokens = 0.0, 0.0
        for batch in validation_batches(
            self.val_dataset, self.config.data.train_batch_size, collate_fn=self.val_dataset.collate
        ):
            out = self.worker_group.validate(batch)
            loss_sum += out.batch["loss_sum"].sum().item()
            tokens += out.batch["loss_tokens"].sum().item()
        return {"val/loss": loss_sum / max(tokens, 1.0)}

    # ---- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        local_dir = self.config.trainer.default_local_dir
        step_dir = checkpoint_dir(local_dir, self.global_steps)
        self.worker_group.save_checkpoint(os.path.join(step_dir, "model"))
        os.makedirs(step_dir, exist_ok=True)  # the driver may not be on rank 0's machine
        torch.save(
            {"global_steps": self.global_steps, "dataloader": self.train_batches.state_dict(), "rng": rng_state()},
            os.path.join(step_dir, "trainer_state.pt"),
        )
        mark_latest(local_dir, self.global_steps)

    def load_checkpoint(self) -> None:
        cfg = self.config.trainer
        step_dirs = resume_dirs(cfg.resume_mode, cfg.resume_from_path, cfg.default_local_dir)
        if load_first(step_dirs, self._load_from) is not None:
            print(f"resumed: continuing at step {self.global_steps + 1}")

    def _load_from(self, step_dir: str) -> None:
        state = torch.load(os.path.join(step_dir, "trainer_state.pt"), weights_only=False)
        self.worker_group.load_checkpoint(os.path.join(step_dir, "model"))
        self.global_steps = state["global_steps"]
        self.train_batches.load_state_dict(state["dataloader"])
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
        progress = tqdm(total=self.total_training_steps, initial=self.global_steps, desc="training steps")
        while self.global_steps < self.total_training_steps:
            self.global_steps += 1
            timing: dict[str, float] = {}
            with timer("step", timing):
                metrics = self.worker_group.train_step(next(self.train_batches)).meta_info["metrics"]
            last = self.global_steps == self.total_training_steps
            due = cfg.test_freq > 0 and self.global_steps % cfg.test_freq == 0
            if self.val_dataset is not None and (last or due):
                with timer("validate", timing):
                    metrics.update(self.validate())
            if cfg.save_freq > 0 and (last or self.global_steps % cfg.save_freq == 0):
                self.save_checkpoint()
            metrics.update({f"timing_s/{k}": v for k, v in timing.items()})
            metrics["training/global_step"] = self.global_steps
            metrics["training/epoch"] = self.train_batches.epoch
            logger.log(metrics, step=self.global_steps)
            progress.update(1)
        progress.close()
        logger.finish()
