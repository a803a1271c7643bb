"""LoRA: the merged weights the rollout and checkpoints get, the reference with adapters off, and a
checkpoint that saves and restores the adapters alone."""

import copy
import os
import subprocess
import sys

import pytest
import torch
from torch.distributed.checkpoint import FileSystemReader
from transformers import AutoModelForCausalLM

from tests.conftest import REPO_ROOT
from verl.config import OptimConfig, PolicyModelConfig
from verl.utils.fsdp_utils import build_optimizer
from verl.utils.lora import adapters_off, add_adapters, has_adapters, lora_scalings, merged_weights
from verl.utils.tiny_model import build_tiny_model

INPUT = torch.tensor([[5, 6, 7, 8, 9]])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("m"), vocab_size=300, hidden_size=32, intermediate_size=64)


def with_adapters(path, **settings) -> torch.nn.Module:
    """The tiny model with adapters whose B is random: at peft's initialisation (B = 0) they would
    change nothing and hide a wrong merge."""
    model = add_adapters(AutoModelForCausalLM.from_pretrained(path), PolicyModelConfig(lora_rank=4, **settings))
    torch.manual_seed(0)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.2)
    return model


def test_merged_weights_are_the_base_models_weights_with_the_adapters_folded_in(tiny):
    model = with_adapters(tiny, lora_alpha=8)
    merged = dict(merged_weights(model.state_dict().items(), lora_scalings(model)))
    expected = copy.deepcopy(model).merge_and_unload().state_dict()  # peft's own merge
    assert merged.keys() == expected.keys() == AutoModelForCausalLM.from_pretrained(tiny).state_dict().keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(merged[name], tensor, msg=name)
    plain = AutoModelForCausalLM.from_pretrained(tiny)
    plain.load_state_dict(merged)
    torch.testing.assert_close(plain(input_ids=INPUT).logits, model(input_ids=INPUT).logits)
    assert set(lora_scalings(model).values()) == {8 / 4}


def test_only_the_named_modules_get_adapters_and_only_adapters_train(tiny):
    model = with_adapters(
        tiny, target_modules=["q_proj", "v_proj"], exclude_modules=["model.layers.0.self_attn.v_proj"]
    )
    adapted = {name.removeprefix("base_model.model.") for name in lora_scalings(model)}
    assert adapted == {
        "model.layers.0.self_attn.q_proj",
        "model.layers.1.self_attn.q_proj",
        "model.layers.1.self_attn.v_proj",
    }
    optimizer, _ = build_optimizer(model, OptimConfig())
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert trained == {id(p) for name, p in model.named_parameters() if ".lora_" in name}
    merged = dict(merged_weights(model.state_dict().items(), lora_scalings(model)))
    assert merged.keys() == AutoModelForCausalLM.from_pretrained(tiny).state_dict().keys()


def test_with_adapters_off_the_model_is_its_base_model(tiny):
    model = with_adapters(tiny)
    base = AutoModelForCausalLM.from_pretrained(tiny)(input_ids=INPUT).logits
    assert has_adapters(model) and not has_adapters(AutoModelForCausalLM.from_pretrained(tiny))
    assert not torch.allclose(model(input_ids=INPUT).logits, base)
    with adapters_off(model):
        torch.testing.assert_close(model(input_ids=INPUT).logits, base, rtol=0, atol=0)
    assert not torch.allclose(model(input_ids=INPUT).logits, base)  # back on after the block


def test_a_weight_without_its_adapter_pieces_is_an_error(tiny):
    model = with_adapters(tiny)
    pieces = [(n, t) for n, t in model.state_dict().items() if "layers.1.mlp.up_proj.lora_B" not in n]
    with pytest.raises(ValueError, match=r"without all of weight, lora_A and lora_B: \['model.layers.1.mlp.up_proj'\]"):
        dict(merged_weights(pieces, lora_scalings(model)))


CHECKPOINT = """
import os, socket, sys, torch, torch.distributed as dist
from peft import PeftModel
from transformers import AutoModelForCausalLM
from verl.config import OptimConfig, PolicyModelConfig
from verl.utils.checkpoint import load_checkpoint, save_checkpoint
from verl.utils.fsdp_utils import build_optimizer
from verl.utils.lora import add_adapters

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
path, out = sys.argv[1], sys.argv[2]
x = torch.tensor([[5, 6, 7, 8]])
def policy():
    return add_adapters(AutoModelForCausalLM.from_pretrained(path), PolicyModelConfig(lora_rank=4))
model = policy()
optimizer, scheduler = build_optimizer(model, OptimConfig(lr=1e-2))
for _ in range(3):
    model(input_ids=x).logits.logsumexp(-1).sum().backward()
    optimizer.step()
    optimizer.zero_grad()
trained = model(input_ids=x).logits
save_checkpoint(out, model, optimizer, scheduler, save_hf=True)
resumed = policy()
optimizer2, scheduler2 = build_optimizer(resumed, OptimConfig(lr=1e-2))
load_checkpoint(out, resumed, optimizer2, scheduler2)
torch.testing.assert_close(resumed(input_ids=x).logits, trained, rtol=0, atol=0)
merged = AutoModelForCausalLM.from_pretrained(os.path.join(out, "huggingface"))
torch.testing.assert_close(merged(input_ids=x).logits, trained)
adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(path), os.path.join(out, "lora_adapter"))
torch.testing.assert_close(adapter(input_ids=x).logits, trained)
other = add_adapters(AutoModelForCausalLM.from_pretrained(sys.argv[3]), PolicyModelConfig(lora_rank=4))
try:
    load_checkpoint(out, other)
    raise SystemExit("adapters loaded onto another base model")
except ValueError as e:
    assert "holds LoRA adapters trained on" in str(e) and "set actor_rollout_ref.model.path" in str(e), e
print("RESUMED")
"""


def test_a_checkpoint_holds_the_adapters_and_the_merged_model_and_resumes(tmp_path, tiny):
    """... and refuses to put its adapters on another base model, which dcp/ does not hold."""
    other_base = build_tiny_model(tmp_path / "other", vocab_size=300, hidden_size=32, intermediate_size=64, seed=1)
    run = subprocess.run(
        [sys.executable, "-c", CHECKPOINT, str(tiny), str(tmp_path / "ckpt"), str(other_base)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": REPO_ROOT},
    )
    assert run.returncode == 0 and "RESUMED" in run.stdout, run.stderr[-3000:]
    saved = FileSystemReader(str(tmp_path / "ckpt" / "dcp")).read_metadata().state_dict_metadata
    model_keys = {k.removeprefix("model.") for k in saved if k.startswith("model.")}
    assert model_keys and all(".lora_A." in k or ".lora_B." in k for k in model_keys)  # no copy of the frozen base


def test_an_adapter_on_a_head_tied_to_the_embeddings_is_refused(tmp_path):
    """vLLM loads a tied head from the embeddings: an adapter on it would never reach the rollout."""
    from verl.utils.lora import check_adapter_targets

    tied = build_tiny_model(
        tmp_path / "tied", vocab_size=300, hidden_size=32, intermediate_size=64, tie_word_embeddings=True
    )
    settings = PolicyModelConfig(path=str(tied), lora_rank=4, target_modules=["q_proj", "lm_head"])
    with pytest.raises(ValueError, match="target_modules: lm_head is tied to the embeddings in this model"):
        check_adapter_targets(settings, "actor_rollout_ref.model")
    check_adapter_targets(PolicyModelConfig(path=str(tied), lora_rank=4), "actor_rollout_ref.model")  # all-linear
