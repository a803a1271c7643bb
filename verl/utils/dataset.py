"""Prompt dataset over parquet files, in the layout the RL trainer consumes.

Each parquet row needs a chat-style ``prompt`` (list of {"role", "content"} dicts)
and a ``data_source`` string; ``reward_model`` and ``extra_info`` dicts are optional, and any other
column travels with the row into the batch (e.g. a ``question`` column a rollout loop reads).
"""

import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from verl.utils.batch_schema import Key
from verl.utils.torch_functional import left_pad, position_ids

logger = logging.getLogger(__name__)

OPTIONAL_DICT_COLUMNS = ("reward_model", "extra_info")
# Fields the dataset itself produces; a parquet column of the same name is not carried.
OWN_FIELDS = (Key.INPUT_IDS, Key.ATTENTION_MASK, Key.POSITION_IDS, "raw_prompt", "index")
TRUNCATIONS = ("error", "left", "right")
TOKENIZE_CHUNK = 1000


class RLHFDataset(Dataset):
    """Templated, tokenised prompts, left-padded to ``max_prompt_length``.

    A prompt over ``max_prompt_length`` tokens is dropped and counted when ``filter_overlong_prompts``
    (training sets); otherwise ``truncation`` decides: ``error`` stops with the file and row, ``left``
    keeps its last tokens, ``right`` its first, and the truncated rows are counted (``truncated``).
    ``index`` of a row is ``extra_info["index"]`` when present, else its position
    in this dataset (all files concatenated, after filtering).
    """

    def __init__(
        self,
        data_files: str | list[str],
        tokenizer,
        *,
        prompt_key: str = "prompt",
        max_prompt_length: int = 512,
        filter_overlong_prompts: bool = True,
        truncation: str = "error",
        tools: list[dict] | None = None,
    ):
        files = [data_files] if isinstance(data_files, (str, os.PathLike)) else list(data_files)
        if not files:
            raise ValueError("RLHFDataset: data_files is empty")
        if tokenizer.pad_token_id is None:
            raise ValueError(f"RLHFDataset: tokenizer {type(tokenizer).__name__} has no pad_token_id to left-pad with")
        self.tokenizer = tokenizer
        self.tools = tools or None  # tool schemas the chat template declares in every prompt
        self.prompt_key = prompt_key
        self.max_prompt_length = max_prompt_length
        self.filter_overlong_prompts = filter_overlong_prompts
        if truncation not in TRUNCATIONS:
            raise ValueError(f"RLHFDataset: data.truncation={truncation!r}: use one of {list(TRUNCATIONS)}")
        self.truncation = truncation
        self.truncated = 0
        self.rows: list[dict] = []
        self.file_rows: dict[str, int] = {}  # rows kept from each file
        for path in files:
            rows = self._load(str(path))
            self.file_rows[str(path)] = len(rows)
            self.rows.extend(rows)
        columns = {key for row in self.rows for key in row}
        for row in self.rows:  # files may carry different extra columns; a batch needs every key
            for key in columns - row.keys():
                row[key] = None
        if not self.rows:
            raise ValueError(f"RLHFDataset: no prompts of at most {max_prompt_length} tokens in {files}")

    def _load(self, path: str) -> list[dict]:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"RLHFDataset: parquet file not found: {path}")
        frame = pd.read_parquet(path)
        for column in (self.prompt_key, "data_source"):
            if column not in frame.columns:
                raise ValueError(f"RLHFDataset: {path} has no column '{column}'; its columns are {list(frame.columns)}")

        texts = [self._render(path, i, value) for i, value in enumerate(frame[self.prompt_key])]
        token_ids: list[list[int]] = []
        for start in tqdm(range(0, len(texts), TOKENIZE_CHUNK), desc=f"tokenising {path}", disable=None):
            chunk = texts[start : start + TOKENIZE_CHUNK]
            token_ids.extend(self.tokenizer(chunk, add_special_tokens=False)["input_ids"])

        carried = [c for c in frame.columns if c not in (self.prompt_key, *OPTIONAL_DICT_COLUMNS, *OWN_FIELDS)]
        rows, dropped, truncated = [], 0, 0
        for i, ids in enumerate(token_ids):
            if len(ids) > self.max_prompt_length:
                if self.filter_overlong_prompts:
                    dropped += 1
                    continue
                if self.truncation == "error":
                    raise ValueError(
                        f"RLHFDataset: {path} row {i}: prompt is {len(ids)} tokens, over "
                        f"data.max_prompt_length={self.max_prompt_length}; raise it, or set data.truncation=left "
                        "(keep the prompt's end) or right (keep its start)"
                    )
                ids = ids[-self.max_prompt_length :] if self.truncation == "left" else ids[: self.max_prompt_length]
                truncated += 1
            row = {column: frame[column].iat[i] for column in carried}
            row.update(prompt_ids=ids, raw_prompt=texts[i], data_source=str(frame["data_source"].iat[i]))
            for column in OPTIONAL_DICT_COLUMNS:
                row[column] = _as_dict(path, i, column, frame[column].iat[i] if column in frame.columns else None)
            rows.append(row)
        if dropped:
            logger.warning(
                "RLHFDataset: dropped %d of %d prompts from %s longer than %d tokens",
                dropped,
                len(token_ids),
                path,
                self.max_prompt_length,
            )
        if truncated:
            logger.warning(
                "RLHFDataset: cut %d of %d prompts from %s to %d tokens (data.truncation=%s)",
                truncated,
                len(token_ids),
                path,
                self.max_prompt_length,
                self.truncation,
            )
        self.truncated += truncated
        return rows

    def _render(self, path: str, row: int, value) -> str:
        where = f"RLHFDataset: {path} row {row}: column '{self.prompt_key}'"
        return render_prompt(self.tokenizer, value, where, self.tools)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        row = self.rows[i]
        ids = row["prompt_ids"]
        [input_ids], [attention_mask] = left_pad([ids], self.tokenizer.pad_token_id, self.max_prompt_length)
        # Parquet fills a struct key that other rows have with None.
        index = row["extra_info"].get("index")
        return {
            **{k: v for k, v in row.items() if k != "prompt_ids"},
            Key.INPUT_IDS: input_ids,
            Key.ATTENTION_MASK: attention_mask,
            Key.POSITION_IDS: position_ids(attention_mask),
            "index": int(index) if index is not None else i,
        }


def render_prompt(tokenizer, value, where: str, tools: list[dict] | None = None) -> str:
    """Turn a row's messages into the prompt text the policy sees. A plain string is used as it is
    (a prompt already written for a base model). ``where`` names the file, row and column in errors;
    ``tools``: function schemas the chat template declares (an agent environment's tools)."""
    if isinstance(value, str) and value:
        return value
    messages = list(value) if isinstance(value, (list, np.ndarray)) else None
    if not messages or not all(
        isinstance(m, Mapping) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in messages
    ):
        raise ValueError(
            f"{where} must be a non-empty string or a non-empty list of {{'role': str, 'content': str}} dicts, "
            f"got {value!r:.200}"
        )
    messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, tools=tools)
    if tools:
        raise ValueError(f"{where}: the environment declares tools, which need a tokenizer with a chat template")
    # Base models have no template: the prompt is the plain text of the messages.
    return "\n".join(m["content"] for m in messages)


def _as_dict(path: str, row: int, column: str, value) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"RLHFDataset: {path} row {row}: column '{column}' must be a dict, got {value!r:.200}")
    return dict(value)


def collate_fn(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor | np.ndarray]:
    """Stack tensor fields; every other field becomes a 1-D numpy object array."""
    if not rows:
        raise ValueError("collate_fn: got an empty batch")
    batch: dict[str, torch.Tensor | np.ndarray] = {}
    for key, first in rows[0].items():
        values = [row[key] for row in rows]
        if isinstance(first, torch.Tensor):
            batch[key] = torch.stack(values)
        else:
            # Filled element by element so dicts and lists are not broadcast into extra dimensions.
            array = np.empty(len(values), dtype=object)
            for j, value in enumerate(values):
                array[j] = value
            batch[key] = array
    return batch
