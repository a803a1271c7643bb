"""The batch's tensor keys in one place: each key's dtype, shape, meaning, who writes and who reads it.

Keys are plain strings (``Key.INPUT_IDS == "input_ids"``), so a ``DataProto`` built with either
spelling is the same. Dimensions: ``batch`` rows (B, one per response once the prompts were
repeated), ``prompt_len`` (P), ``response_len`` (R) and ``sequence``, which is P before the rollout
and P + R after it.

The layout: prompts left-padded (every prompt's last token in column P - 1), responses right-padded
(the first response token in column P), position ids counted over the attended tokens
(``position_ids``). In a multi-turn rollout the responses also hold observations (documents,
critiques, notices): attended to (``attention_mask`` 1) but never trained on (``response_mask`` 0).
"""

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch

from verl.utils.torch_functional import position_ids

BATCH, PROMPT, RESPONSE, SEQUENCE = "batch", "prompt_len", "response_len", "sequence"


class Key:
    """The tensor keys of the training batch."""

    INPUT_IDS = "input_ids"
    ATTENTION_MASK = "attention_mask"
    POSITION_IDS = "position_ids"
    PROMPTS = "prompts"
    RESPONSES = "responses"
    RESPONSE_MASK = "response_mask"
    ROLLOUT_LOG_PROBS = "rollout_log_probs"
    TURN_IDS = "turn_ids"
    TURN_SCORES = "turn_scores"
    TURN_GRADED = "turn_graded"
    TOKEN_LEVEL_SCORES = "token_level_scores"
    TOKEN_LEVEL_REWARDS = "token_level_rewards"
    OLD_LOG_PROBS = "old_log_probs"
    ENTROPYS = "entropys"
    MEASURED = "measured"
    REF_LOG_PROB = "ref_log_prob"
    VALUES = "values"
    ADVANTAGES = "advantages"
    RETURNS = "returns"


@dataclass(frozen=True)
class Field:
    key: str
    dtype: torch.dtype
    shape: tuple[str, ...]
    meaning: str
    written_by: str
    read_by: str


_TOKENS = (BATCH, SEQUENCE)
_PER_RESPONSE_TOKEN = (BATCH, RESPONSE)

FIELDS: dict[str, Field] = {
    f.key: f
    for f in (
        Field(
            Key.INPUT_IDS,
            torch.long,
            _TOKENS,
            "token ids: the left-padded prompt, then (after the rollout) the right-padded response",
            "RLHFDataset (the prompt); the rollout: build_sequences, SearchGenerationManager",
            "the rollout engines; actor, reference and value forwards (micro_batch)",
        ),
        Field(
            Key.ATTENTION_MASK,
            torch.long,
            _TOKENS,
            "1 on every token the model attends to: prompt, sampled and observation tokens",
            "RLHFDataset; the rollout",
            "the rollout engines; forwards; micro-batching and balance_batch (token counts); metrics",
        ),
        Field(
            Key.POSITION_IDS,
            torch.long,
            _TOKENS,
            "positions over the attended tokens (position_ids(attention_mask))",
            "RLHFDataset; the rollout",
            "actor, reference and value forwards",
        ),
        Field(
            Key.PROMPTS,
            torch.long,
            (BATCH, PROMPT),
            "the left-padded prompt ids (input_ids' first P columns)",
            "the rollout",
            "reward managers, rollout dumps",
        ),
        Field(
            Key.RESPONSES,
            torch.long,
            _PER_RESPONSE_TOKEN,
            "the right-padded response ids (input_ids' last R columns), observations included",
            "the rollout",
            "reward managers, actor and value forwards (its width is R), multi-turn loop",
        ),
        Field(
            Key.RESPONSE_MASK,
            torch.long,
            _PER_RESPONSE_TOKEN,
            "1 on sampled tokens; 0 on observations and padding (no loss, entropy, KL or advantage there)",
            "the rollout",
            "losses, KL, advantage estimators, value targets, metrics",
        ),
        Field(
            Key.ROLLOUT_LOG_PROBS,
            torch.float32,
            _PER_RESPONSE_TOKEN,
            "log-prob each sampled token was drawn with by the rollout engine; 0 elsewhere",
            "the rollout (when the engine reports them)",
            "the trainer: the old log-probs with algorithm.old_log_prob=from_rollout, rollout/actor mismatch metrics",
        ),
        Field(
            Key.TURN_IDS,
            torch.long,
            _PER_RESPONSE_TOKEN,
            "the turn each sampled token belongs to; -1 on observations and padding",
            "SearchGenerationManager (when the critic graded)",
            "the trainer's turn rewards (core_algos.TurnRewards)",
        ),
        Field(
            Key.TURN_SCORES,
            torch.float32,
            _PER_RESPONSE_TOKEN,
            "a graded search's turn reward on its last sampled token; 0 elsewhere",
            "SearchGenerationManager (when the critic graded)",
            "the trainer: added to token_level_rewards and to the advantage",
        ),
        Field(
            Key.TURN_GRADED,
            torch.long,
            _PER_RESPONSE_TOKEN,
            "1 on the tokens that carry a turn score",
            "SearchGenerationManager (when the critic graded)",
            "the trainer's turn rewards",
        ),
        Field(
            Key.TOKEN_LEVEL_SCORES,
            torch.float32,
            _PER_RESPONSE_TOKEN,
            "the reward function's scores (the outcome reward on a response's last sampled token)",
            "the trainer, from the reward manager",
            "the trainer (token_level_rewards), metrics, rollout dumps",
        ),
        Field(
            Key.TOKEN_LEVEL_REWARDS,
            torch.float32,
            _PER_RESPONSE_TOKEN,
            "scores plus turn rewards, minus the KL penalty when it is in the reward",
            "the trainer",
            "advantage estimators, metrics",
        ),
        Field(
            Key.OLD_LOG_PROBS,
            torch.float32,
            _PER_RESPONSE_TOKEN,
            "log-probs of the response tokens under the policy that sampled them (before the update)",
            "actor compute_log_prob, the update's first pass, or the rollout's (old_log_prob=from_rollout)",
            "actor update (the importance ratio), the KL penalty, metrics",
        ),
        Field(
            Key.ENTROPYS,
            torch.float32,
            _PER_RESPONSE_TOKEN,
            "the policy's entropy at each response token",
            "actor compute_log_prob or the update's first pass",
            "metrics",
        ),
        Field(
            Key.MEASURED,
            torch.bool,
            (BATCH,),
            "rows whose log-probs the update's first pass measured (its reply only)",
            "actor update_policy",
            "first-pass metrics",
        ),
        Field(
            Key.REF_LOG_PROB,
            torch.float32,
            _PER_RESPONSE_TOKEN,
            "log-probs of the response tokens under the reference policy",
            "reference worker",
            "actor update (KL loss), the KL penalty",
        ),
        Field(
            Key.VALUES,
            torch.float32,
            _PER_RESPONSE_TOKEN,
            "the value model's estimate at each response token; 0 where response_mask is 0",
            "value worker compute_values",
            "GAE, value update (clipping), metrics",
        ),
        Field(
            Key.ADVANTAGES,
            torch.float32,
            _PER_RESPONSE_TOKEN,
            "advantage of each response token; 0 where response_mask is 0",
            "the trainer (compute_advantage)",
            "actor update, metrics",
        ),
        Field(
            Key.RETURNS,
            torch.float32,
            _PER_RESPONSE_TOKEN,
            "value targets of each response token",
            "the trainer (compute_advantage)",
            "value update, metrics",
        ),
    )
}


class Stage(str, Enum):
    """How far through a step a batch is: which keys it must have by then."""

    PROMPT = "prompt"  # what the dataset gives and the rollout receives
    ROLLOUT = "rollout"  # what the rollout returns


REQUIRED: dict[Stage, tuple[str, ...]] = {
    Stage.PROMPT: (Key.INPUT_IDS, Key.ATTENTION_MASK),
    Stage.ROLLOUT: (
        Key.INPUT_IDS,
        Key.ATTENTION_MASK,
        Key.POSITION_IDS,
        Key.PROMPTS,
        Key.RESPONSES,
        Key.RESPONSE_MASK,
    ),
}


def sequence_tensors(
    prompts: torch.Tensor,
    prompt_mask: torch.Tensor,
    responses: torch.Tensor,
    response_mask: torch.Tensor,
    response_attention: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """A rollout's token tensors from its left-padded prompts ([B, P] ids and attention mask) and
    right-padded responses ([B, R] ids and response mask). ``response_attention`` ([B, R]) is where
    the model attends within the responses when that is more than the sampled tokens (observations);
    by default the response mask."""
    attended = response_mask if response_attention is None else response_attention
    attention_mask = torch.cat([prompt_mask, attended], dim=1)
    return {
        Key.PROMPTS: prompts,
        Key.RESPONSES: responses,
        Key.RESPONSE_MASK: response_mask,
        Key.INPUT_IDS: torch.cat([prompts, responses], dim=1),
        Key.ATTENTION_MASK: attention_mask,
        Key.POSITION_IDS: position_ids(attention_mask),
    }


def check_batch(batch: Any, stage: Stage) -> None:
    """Raises ValueError unless ``batch`` (a DataProto, or a mapping of key to tensor) has the keys
    ``stage`` requires and every key of the schema it has agrees with the schema's dtype and shape
    (the same B, P and R throughout), and, after the rollout, input_ids and attention_mask are the
    prompt and response columns side by side (the layout above). Keys outside the schema are
    not checked. For tests and debugging; it reads every tensor."""
    tensors: Mapping[str, torch.Tensor] = batch.batch if hasattr(batch, "non_tensor_batch") else batch
    present = set(tensors.keys())
    missing = [k for k in REQUIRED[stage] if k not in present]
    if missing:
        raise ValueError(f"a batch at stage {stage.value!r} lacks {missing}; it has {sorted(present)}")
    sizes: dict[str, int] = {}
    bound_by: dict[str, str] = {}  # the key each size was first read from
    for key in sorted(present & FIELDS.keys()):
        field, tensor = FIELDS[key], tensors[key]
        if tensor.dtype != field.dtype:
            raise ValueError(f"batch[{key!r}] is {tensor.dtype}, the schema says {field.dtype} ({field.written_by})")
        if tensor.dim() != len(field.shape):
            raise ValueError(f"batch[{key!r}] has shape {list(tensor.shape)}, the schema says {list(field.shape)}")
        for name, size in zip(field.shape, tensor.shape, strict=True):
            if sizes.setdefault(name, size) != size:
                raise ValueError(
                    f"batch[{key!r}] has {name} = {size}, batch[{bound_by[name]!r}] has {sizes[name]} "
                    f"(schema shapes: {list(field.shape)}, {list(FIELDS[bound_by[name]].shape)})"
                )
            bound_by.setdefault(name, key)
    if stage is Stage.PROMPT:
        return
    if sizes[SEQUENCE] != sizes[PROMPT] + sizes[RESPONSE]:
        raise ValueError(
            f"input_ids has {sizes[SEQUENCE]} columns, prompts {sizes[PROMPT]} + responses {sizes[RESPONSE]}"
        )
    attention = tensors[Key.ATTENTION_MASK]
    if bool((attention[:, : sizes[PROMPT]].diff(dim=1) < 0).any()):
        raise ValueError("a prompt is not left-padded: its attention mask goes from 1 back to 0")
    if bool((attention[:, sizes[PROMPT] :].diff(dim=1) > 0).any()):
        raise ValueError("a response is not right-padded: its attention mask goes from 0 back to 1")
    expected = sequence_tensors(
        tensors[Key.PROMPTS],
        attention[:, : sizes[PROMPT]],
        tensors[Key.RESPONSES],
        tensors[Key.RESPONSE_MASK],
        attention[:, sizes[PROMPT] :],
    )
    for key in (Key.INPUT_IDS, Key.POSITION_IDS):
        if not torch.equal(tensors[key], expected[key]):
            raise ValueError(f"batch[{key!r}] is not the prompts' and responses' (see verl/utils/batch_schema.py)")
    if bool((tensors[Key.RESPONSE_MASK].bool() & ~attention[:, sizes[PROMPT] :].bool()).any()):
        raise ValueError("response_mask is 1 on a token the attention mask leaves out")
