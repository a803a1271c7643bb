"""The trainer's rollout dump (``trainer.rollout_data_dir``): one JSON line per response per step."""

import json
import os
from typing import Any

import numpy as np

from verl.protocol import DataProto
from verl.utils.batch_schema import Key


def dump_rollouts(batch: DataProto, extra: dict[str, np.ndarray], tokenizer: Any, step: int, out_dir: str) -> None:
    """Writes ``out_dir/<step>.jsonl``: per response its prompt, response and ids, mask, reward, the
    reward function's extra values and what the rollout loop asked to keep (``meta_info["dump_keys"]``)."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{step}.jsonl")
    b = batch.batch
    prompt_width = b[Key.PROMPTS].shape[1]
    with open(path, "w") as f:
        for i in range(len(batch)):
            prompt_ids = b[Key.PROMPTS][i][b[Key.ATTENTION_MASK][i, :prompt_width].bool()]
            span = b[Key.ATTENTION_MASK][i, prompt_width:].bool()
            response_ids = b[Key.RESPONSES][i][span]
            row = {
                "step": step,
                "uid": batch.non_tensor_batch["uid"][i],
                "data_source": batch.non_tensor_batch["data_source"][i],
                "prompt": tokenizer.decode(prompt_ids),
                "response": tokenizer.decode(response_ids),
                "response_ids": response_ids.tolist(),
                "response_mask": b[Key.RESPONSE_MASK][i][span].tolist(),
                "reward": b[Key.TOKEN_LEVEL_SCORES][i].sum().item(),
                **{k: _jsonable(v[i]) for k, v in extra.items()},
                # what the rollout loop asks to keep, e.g. its record of every turn
                **{k: _jsonable(batch.non_tensor_batch[k][i]) for k in batch.meta_info.get("dump_keys", ())},
            }
            f.write(json.dumps(row) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value if isinstance(value, (str, int, float, bool, list, dict, type(None))) else str(value)
