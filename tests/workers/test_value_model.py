import copy
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from tests.workers.test_actor import make_batch
from verl.config import CriticConfig
from verl.utils.tiny_model import build_tiny_model
from verl.workers.critic import DataParallelPPOCritic
from verl.workers.fsdp_workers import load_value_model


def test_value_model_has_one_output_and_is_deterministic_in_training_mode(tmp_path):
    path = build_tiny_model(tmp_path / "m", vocab_size=300, hidden_size=32, intermediate_size=64)
    model = load_value_model(str(path), trust_remote_code=False).train()
    ids = torch.tensor([[5, 6, 7, 8]])
    first, second = model(input_ids=ids).logits, model(input_ids=ids).logits
    assert first.shape == (1, 4, 1)
    assert torch.equal(first, second)  # no dropout between the value head and its input


def critic_update(path, data, **config):
    torch.manual_seed(0)
    remove_padding = config.pop("remove_padding", False)
    model = load_value_model(str(path), trust_remote_code=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    critic = DataParallelPPOCritic(
        CriticConfig(grad_clip=1e9, **config),
        model,
        optimizer,
        torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0),
        remove_padding=remove_padding,
    )
    values = critic.compute_values(data)
    before = copy.deepcopy(model.state_dict())
    metrics = critic.update_critic(data, mini_batch_size=len(data))
    return values, {k: v - before[k] for k, v in model.state_dict().items()}, metrics


def test_critic_token_budget_and_padding_free_passes_equal_the_padded_ones(tmp_path):
    path = build_tiny_model(tmp_path / "m", vocab_size=300, hidden_size=32, intermediate_size=64)
    data = make_batch(7)
    data.batch["attention_mask"][3, :4] = 0
    data.batch["position_ids"] = (data.batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    data.batch["values"] = torch.randn(7, 6)
    data.batch["returns"] = torch.randn(7, 6)
    values, update, _ = critic_update(path, data, ppo_micro_batch_size_per_gpu=7)
    for variant in (
        {"remove_padding": True, "ppo_micro_batch_size_per_gpu": 7},
        {"use_dynamic_bsz": True, "ppo_max_token_len_per_gpu": 25, "remove_padding": True},
        {"use_dynamic_bsz": True, "ppo_max_token_len_per_gpu": 25},
    ):
        other_values, other_update, metrics = critic_update(path, data, **variant)
        torch.testing.assert_close(other_values, values, rtol=0, atol=1e-5)
        for name in update:
            torch.testing.assert_close(other_update[name], update[name], rtol=1e-4, atol=1e-6, msg=name)
