"""Supervised fine-tuning rows over parquet files: context tokens, then the tokens trained on.

A row has a ``prompt`` (a chat list, templated with the generation prompt, or a plain string used
verbatim), an optional ``response_prefix`` string that follows the prompt and is not trained on
(the start of a later turn of a multi-turn trajectory) and a ``response`` string, trained on
together with the eos token appended to it. A file without the prompt column but with a
``messages`` chat list uses all turns but the last as the prompt and the last, an assistant turn,
as the response.
"""

import os
from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from verl.utils.dataset import render_prompt
from verl.utils.torch_functional import position_ids

PREFIX_COLUMN = "response_prefix"
MESSAGES_COLUMN = "messages"
TRUNCATIONS = ("right", "error")


class SFTDataset(Dataset):
    """Rows are tokenised once, at load; each part on its own so the loss mask falls exactly on
    the response and eos tokens."""

    def __init__(
        self,
        data_files: str | list[str],
        tokenizer,
        *,
        prompt_key: str = "prompt",
        response_key: str = "response",
        max_length: int = 1024,
        truncation: str = "right",
    ):
        files = [data_files] if isinstance(data_files, (str, os.PathLike)) else list(data_files)
        if not files:
            raise ValueError("SFTDataset: data_files is empty")
        if truncation not in TRUNCATIONS:
            raise ValueError(f"SFTDataset: data.truncation={truncation!r}: use one of {list(TRUNCATIONS)}")
        if tokenizer.eos_token_id is None:
            raise ValueError(f"SFTDataset: tokenizer {type(tokenizer).__name__} has no eos token to end responses with")
        self.tokenizer = tokenizer
        self.prompt_key = prompt_key
        self.response_key = response_key
        self.max_length = max_length
        self.truncation = truncation
        # Padding is never attended to nor trained on, so eos serves when there is no pad token.
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.rows: list[tuple[list[int], int]] = []  # (token ids, leading tokens not trained on)
        for path in files:
            self.rows.extend(self._load(str(path)))
        if not self.rows:
            raise ValueError(f"SFTDataset: no rows in {files}")

    def _load(self, path: str) -> list[tuple[list[int], int]]:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"SFTDataset: parquet file not found: {path}")
        frame = pd.read_parquet(path)
        if frame.empty:
            return []
        if self.prompt_key not in frame.columns and MESSAGES_COLUMN in frame.columns:
            prompts, responses = self._split_messages(path, frame[MESSAGES_COLUMN])
        else:
            for column in (self.prompt_key, self.response_key):
                if column not in frame.columns:
                    raise ValueError(
                        f"SFTDataset: {path} has no column '{column}' (nor a '{MESSAGES_COLUMN}' chat "
                        f"list); its columns are {list(frame.columns)}"
                    )
            prompts = [
                render_prompt(self.tokenizer, value, f"SFTDataset: {path} row {i}: column '{self.prompt_key}'")
                for i, value in enumerate(frame[self.prompt_key])
            ]
            responses = [_text(path, i, self.response_key, value) for i, value in enumerate(frame[self.response_key])]
        prefixes = [""] * len(frame)
        if PREFIX_COLUMN in frame.columns:
            prefixes = [
                _text(path, i, PREFIX_COLUMN, value, optional=True) for i, value in enumerate(frame[PREFIX_COLUMN])
            ]

        def tokenize(texts: list[str]) -> list[list[int]]:
            return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

        rows = []
        for i, (prompt, prefix, response) in enumerate(
            zip(tokenize(prompts), tokenize(prefixes), tokenize(responses), strict=True)
        ):
            context, target = prompt + prefix, response + [self.tokenizer.eos_token_id]
            total = len(context) + len(target)
            if total > self.max_length:
                if len(context) >= self.max_length:
                    raise ValueError(
                        f"SFTDataset: {path} row {i}: prompt and response_prefix are {len(context)} "
                        f"tokens, leaving no response token within data.max_length={self.max_length}"
                    )
                if self.truncation == "error":
                    raise ValueError(
                        f"SFTDataset: {path} row {i}: {total} tokens, over data.max_length="
                        f"{self.max_length} (set data.truncation=right to cut the response)"
                    )
                target = target[: self.max_length - len(context)]
            rows.append((context + target, len(context)))
        return rows

    def _split_messages(self, path: str, column: pd.Series) -> tuple[list[str], list[str]]:
        prompts, responses = [], []
        for i, value in enumerate(column):
            messages = list(value) if isinstance(value, (list, np.ndarray)) else []
            last = messages[-1] if messages else None
            if (
                len(messages) < 2
                or not isinstance(last, Mapping)
                or last.get("role") != "assistant"
                or not isinstance(last.get("content"), str)
            ):
                raise ValueError(
                    f"SFTDataset: {path} row {i}: column '{MESSAGES_COLUMN}' must end with an assistant "
                    f"turn that follows at least one other turn, got {value!r:.200}"
                )
            where = f"SFTDataset: {path} row {i}: column '{MESSAGES_COLUMN}'"
            prompts.append(render_prompt(self.tokenizer, messages[:-1], where))
            responses.append(last["content"])
        return prompts, responses

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids, context = self.rows[i]
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "loss_mask": (torch.arange(len(ids)) >= context).long(),
        }

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        """Right-pads the rows to the longest of the batch."""
        width = max(len(row["input_ids"]) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        loss_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, row in enumerate(rows):
            n = len(row["input_ids"])
            input_ids[j, :n], attention_mask[j, :n], loss_mask[j, :n] = row["input_ids"], 1, row["loss_mask"]
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": position_ids(attention_mask),
            "loss_mask": loss_mask,
        }


def _text(path: str, row: int, column: str, value, optional: bool = False) -> str:
    if isinstance(value, str):
        return value
    if optional and (value is None or (isinstance(value, float) and np.isnan(value))):
        return ""
    raise ValueError(f"SFTDataset: {path} row {row}: column '{column}' must be a string, got {value!r:.200}")
