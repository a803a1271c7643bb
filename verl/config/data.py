"""The data section: the parquet files, their columns and the token budgets."""

from dataclasses import dataclass
from typing import Any

from verl.utils.config import ConfigSection, option
from verl.utils.dataset import TRUNCATIONS


@dataclass
class DataConfig(ConfigSection):
    train_files: Any = option("~/data/train.parquet", "Training parquet file, or a list of them.", key="DATA_PATH")
    val_files: Any = option(
        "~/data/test.parquet",
        "Validation parquet file or list; null: no validation.",
        nullable=True,
        key="DATA_PATH",
    )
    prompt_key: str = option("prompt", "Column holding the chat messages (or a plain prompt string).")
    max_prompt_length: int = option(512, "Prompt budget in tokens; prompts are left-padded to it.", min=1)
    max_response_length: int = option(512, "New tokens per generation (per turn in a multi-turn rollout).", min=1)
    train_batch_size: int = option(256, "Prompts per training step (each sampled rollout.n times).", min=1)
    val_batch_size: int | None = option(
        None, "Prompts per validation batch; null: the whole validation set at once.", min=1, nullable=True
    )
    filter_overlong_prompts: bool = option(
        True, "Drop (and count) training prompts over max_prompt_length; validation never drops a row."
    )
    truncation: str = option(
        "error",
        "An overlong prompt that is not dropped (validation, or filter_overlong_prompts=false): error "
        "stops the run naming the file and row; left keeps its last tokens, right its first.",
        choices=TRUNCATIONS,
    )
    shuffle: bool = option(True, "Shuffle the training set each epoch (seeded by data.seed + epoch).")
    seed: int = option(1, "Seed of the training-set order.")
