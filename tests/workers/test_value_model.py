import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from verl.utils.tiny_model import build_tiny_model
from verl.workers.fsdp_workers import load_value_model


def test_value_model_has_one_output_and_is_deterministic_in_training_mode(tmp_path):
    path = build_tiny_model(tmp_path / "m", vocab_size=300, hidden_size=32, intermediate_size=64)
    model = load_value_model(str(path), trust_remote_code=False).train()
    ids = torch.tensor([[5, 6, 7, 8]])
    first, second = model(input_ids=ids).logits, model(input_ids=ids).logits
    assert first.shape == (1, 4, 1)
    assert torch.equal(first, second)  # no dropout between the value head and its input
