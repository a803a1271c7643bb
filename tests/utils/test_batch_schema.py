import pytest
import torch

from verl.protocol import DataProto
from verl.utils.batch_schema import FIELDS, Key, Stage, check_batch, sequence_tensors


def test_every_key_has_a_field_and_keeps_its_string():
    keys = {v for k, v in vars(Key).items() if k.isupper()}
    assert keys == set(FIELDS)
    assert Key.INPUT_IDS == "input_ids" and Key.REF_LOG_PROB == "ref_log_prob" and Key.ENTROPYS == "entropys"


def two_rows() -> dict[str, torch.Tensor]:
    """Prompts [[7, 8], [pad, 9]] and responses [[1, obs, pad], [2, 3, 4]], by hand."""
    return sequence_tensors(
        prompts=torch.tensor([[7, 8], [0, 9]]),
        prompt_mask=torch.tensor([[1, 1], [0, 1]]),
        responses=torch.tensor([[1, 5, 0], [2, 3, 4]]),
        response_mask=torch.tensor([[1, 0, 0], [1, 1, 1]]),
        response_attention=torch.tensor([[1, 1, 0], [1, 1, 1]]),
    )


def test_sequence_tensors_put_prompts_and_responses_side_by_side():
    t = two_rows()
    assert t[Key.INPUT_IDS].tolist() == [[7, 8, 1, 5, 0], [0, 9, 2, 3, 4]]
    assert t[Key.ATTENTION_MASK].tolist() == [[1, 1, 1, 1, 0], [0, 1, 1, 1, 1]]
    assert t[Key.POSITION_IDS].tolist() == [[0, 1, 2, 3, 3], [0, 0, 1, 2, 3]]
    assert t[Key.RESPONSE_MASK].tolist() == [[1, 0, 0], [1, 1, 1]]
    without_observations = sequence_tensors(
        t[Key.PROMPTS], t[Key.ATTENTION_MASK][:, :2], t[Key.RESPONSES], t[Key.RESPONSE_MASK]
    )
    assert without_observations[Key.ATTENTION_MASK].tolist() == [[1, 1, 1, 0, 0], [0, 1, 1, 1, 1]]


def test_check_batch_accepts_the_layout_and_names_what_is_wrong():
    tensors = two_rows()
    check_batch(DataProto.from_dict(tensors=tensors), Stage.ROLLOUT)
    check_batch({k: tensors[k] for k in (Key.INPUT_IDS, Key.ATTENTION_MASK)}, Stage.PROMPT)
    with pytest.raises(ValueError, match="lacks \\['responses'\\]"):
        check_batch({k: v for k, v in tensors.items() if k != Key.RESPONSES}, Stage.ROLLOUT)
    with pytest.raises(ValueError, match="'response_mask'.* is torch.float32"):
        check_batch({**tensors, Key.RESPONSE_MASK: tensors[Key.RESPONSE_MASK].float()}, Stage.ROLLOUT)
    with pytest.raises(ValueError, match=r"\['response_mask'\] has response_len = 3, batch\['advantages'\] has 2"):
        check_batch({**tensors, Key.ADVANTAGES: torch.zeros(2, 2)}, Stage.ROLLOUT)
    with pytest.raises(ValueError, match="'position_ids'.* is not"):
        check_batch({**tensors, Key.POSITION_IDS: torch.zeros(2, 5, dtype=torch.long)}, Stage.ROLLOUT)
    flipped = tensors[Key.ATTENTION_MASK].clone()
    flipped[1, :2] = torch.tensor([1, 0])
    with pytest.raises(ValueError, match="not left-padded"):
        check_batch({**tensors, Key.ATTENTION_MASK: flipped}, Stage.ROLLOUT)
    hole = tensors[Key.RESPONSE_MASK].clone()
    hole[0, 2] = 1  # a trained token where nothing is attended
    with pytest.raises(ValueError, match="response_mask is 1"):
        check_batch({**tensors, Key.RESPONSE_MASK: hole}, Stage.ROLLOUT)
