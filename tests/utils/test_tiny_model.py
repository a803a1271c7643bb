import os
import subprocess
import sys

# huggingface_hub reads this once, when transformers is first imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from verl.utils.tiny_model import build_tiny_model, build_tokenizer

SMALL = dict(vocab_size=400, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, num_kv_heads=1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", **SMALL)


def test_loads_back_and_runs_forward(model_dir):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.tie_word_embeddings is False
    assert model.dtype == torch.float32
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.eos_token == "<|im_end|>"
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id

    batch = tokenizer(["hello world", "a longer question about Paris"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], len(tokenizer))


def test_round_trip_with_tags_and_unseen_characters(model_dir):
    text = "<think>plan</think>\n<search>Zürich 🦜 年</search>\n<information>x</information><answer>42</answer>"
    loaded = AutoTokenizer.from_pretrained(model_dir)
    fresh = build_tokenizer([], SMALL["vocab_size"])
    ids = loaded(text)["input_ids"]
    assert ids == fresh(text)["input_ids"]
    assert loaded.decode(ids) == text
    assert max(ids) < len(loaded)


def test_chat_template(model_dir):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    expected = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n"
    assert tokenizer.apply_chat_template(messages, tokenize=False) == expected
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == expected + "<|im_start|>assistant\n"
    ids = tokenizer(prompt)["input_ids"]
    assert ids.count(tokenizer.convert_tokens_to_ids("<|im_start|>")) == 3
    assert ids.count(tokenizer.eos_token_id) == 2


def test_same_seed_same_weights(tmp_path):
    first = load_file(build_tiny_model(tmp_path / "a", seed=3, **SMALL) / "model.safetensors")
    second = load_file(build_tiny_model(tmp_path / "b", seed=3, **SMALL) / "model.safetensors")
    other = load_file(build_tiny_model(tmp_path / "c", seed=4, **SMALL) / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_models_can_share_a_tokenizer_and_tie_embeddings(tmp_path):
    tokenizer = build_tokenizer(["Zorbel Quant was born in Vesh."], 300)
    a = build_tiny_model(tmp_path / "a", tokenizer=tokenizer, tie_word_embeddings=True, seed=1)
    b = build_tiny_model(tmp_path / "b", tokenizer=tokenizer, seed=2)
    assert AutoTokenizer.from_pretrained(a).get_vocab() == AutoTokenizer.from_pretrained(b).get_vocab()
    tied = AutoModelForCausalLM.from_pretrained(a)
    assert tied.get_output_embeddings().weight.data_ptr() == tied.get_input_embeddings().weight.data_ptr()
    untied = AutoModelForCausalLM.from_pretrained(b)
    assert untied.get_output_embeddings().weight.data_ptr() != untied.get_input_embeddings().weight.data_ptr()


def test_too_small_vocab_is_rejected():
    with pytest.raises(ValueError, match="vocab_size=100"):
        build_tokenizer([], 100)


def test_cli(tmp_path):
    texts = tmp_path / "extra.txt"
    texts.write_text("qwzxv\n" * 200, encoding="utf-8")
    out = tmp_path / "cli_model"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "verl.utils.tiny_model",
            str(out),
            "--vocab-size",
            "400",
            "--hidden-size",
            "32",
            "--intermediate-size",
            "64",
            "--layers",
            "1",
            "--heads",
            "2",
            "--kv-heads",
            "1",
            "--texts",
            str(texts),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 1 and model.config.hidden_size == 32
    tokenizer = AutoTokenizer.from_pretrained(out)
    # The --texts lines take part in training: their frequent word becomes a single token.
    assert len(tokenizer("qwzxv")["input_ids"]) == 1
    assert len(build_tokenizer([], 400)("qwzxv")["input_ids"]) > 1
