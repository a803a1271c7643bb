"""The attention kernel of the trained models: chosen by config, checked at start."""

import importlib.util

import pytest
import torch

from verl.config import PPOConfig
from verl.config.workers import resolve_attention
from verl.utils.config import check_config_tree
from verl.utils.tiny_model import build_tiny_model
from verl.workers.fsdp_workers import load_causal_lm, load_value_model


def test_the_default_is_flash_attention_only_on_a_gpu_that_has_it():
    assert resolve_attention(None, "cpu") == "sdpa"
    has_flash = importlib.util.find_spec("flash_attn") is not None
    assert resolve_attention(None, "cuda") == ("flash_attention_2" if has_flash else "sdpa")
    assert resolve_attention("eager", "cuda") == "eager"


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None, reason="flash-attn is installed here")
def test_flash_attention_without_flash_attn_is_refused_naming_the_key():
    config = PPOConfig()
    config.critic.model.attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match=r"critic.model.attn_implementation=flash_attention_2 needs flash-attn"):
        check_config_tree(config)


def test_models_are_built_with_the_kernel_asked_for_and_agree(tmp_path):
    path = str(build_tiny_model(tmp_path / "m", vocab_size=300, hidden_size=32, intermediate_size=64))
    x = torch.tensor([[5, 6, 7, 8, 9]])
    eager = load_causal_lm(path, False, attn_implementation="eager")
    sdpa = load_causal_lm(path, False)
    assert eager.config._attn_implementation == "eager" and sdpa.config._attn_implementation == "sdpa"
    torch.testing.assert_close(eager(input_ids=x).logits, sdpa(input_ids=x).logits, rtol=1e-5, atol=1e-5)
    skeleton = load_value_model(path, False, weights=False, attn_implementation="eager")
    assert skeleton.config._attn_implementation == "eager"
