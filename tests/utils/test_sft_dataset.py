import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd
import pytest
import torch

from verl.utils.sft_dataset import SFTDataset
from verl.utils.tiny_model import build_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer([], 400)


def user(text):
    return [{"role": "user", "content": text}]


def write(path, rows):
    pd.DataFrame(rows).to_parquet(path)
    return str(path)


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_loss_mask_is_exactly_on_the_response_and_eos(tmp_path, tokenizer):
    path = write(tmp_path / "qa.parquet", {"prompt": [user("Who wrote Hamlet?")], "response": ["Shakespeare."]})
    row = SFTDataset(path, tokenizer)[0]
    prompt = ids(tokenizer, "<|im_start|>user\nWho wrote Hamlet?<|im_end|>\n<|im_start|>assistant\n")
    response = ids(tokenizer, "Shakespeare.") + [tokenizer.eos_token_id]
    assert row["input_ids"].tolist() == prompt + response
    assert row["loss_mask"].tolist() == [0] * len(prompt) + [1] * len(response)


def test_response_prefix_follows_the_prompt_and_is_not_trained_on(tmp_path, tokenizer):
    path = write(
        tmp_path / "turns.parquet",
        {
            "prompt": ["Question: capital of France?\n", "Question: highest mountain?\n"],
            "response_prefix": ["<search>France capital</search>\n<information>Paris</information>\n", None],
            "response": ["<answer>Paris</answer>", "<answer>Everest</answer>"],
        },
    )
    ds = SFTDataset(path, tokenizer)
    prompt = ids(tokenizer, "Question: capital of France?\n")
    prefix = ids(tokenizer, "<search>France capital</search>\n<information>Paris</information>\n")
    response = ids(tokenizer, "<answer>Paris</answer>") + [tokenizer.eos_token_id]
    assert ds[0]["input_ids"].tolist() == prompt + prefix + response
    assert ds[0]["loss_mask"].tolist() == [0] * (len(prompt) + len(prefix)) + [1] * len(response)
    assert ds[1]["loss_mask"].sum() == len(ids(tokenizer, "<answer>Everest</answer>")) + 1  # a missing prefix is empty


def test_chat_prompt_is_templated_and_plain_prompt_used_verbatim(tmp_path, tokenizer):
    chat = write(tmp_path / "chat.parquet", {"prompt": [user("Hi")], "response": ["Hello"]})
    plain = write(tmp_path / "plain.parquet", {"prompt": ["Hi"], "response": ["Hello"]})
    ds = SFTDataset([chat, plain], tokenizer)
    templated = ids(tokenizer, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert ds[0]["input_ids"][: len(templated)].tolist() == templated
    assert ds[1]["input_ids"].tolist() == ids(tokenizer, "Hi") + ids(tokenizer, "Hello") + [tokenizer.eos_token_id]


def test_overlong_rows_lose_the_end_of_the_response_or_are_refused(tmp_path, tokenizer):
    path = write(
        tmp_path / "long.parquet",
        {
            "prompt": ["short", "Who wrote Hamlet?"],
            "response": ["ok", "Shakespeare wrote Hamlet, Macbeth and King Lear."],
        },
    )
    prompt = ids(tokenizer, "Who wrote Hamlet?")
    ds = SFTDataset(path, tokenizer, max_length=len(prompt) + 3)
    row = ds[1]
    assert row["input_ids"].tolist() == prompt + ids(tokenizer, "Shakespeare wrote Hamlet, Macbeth and King Lear.")[:3]
    assert row["loss_mask"].tolist() == [0] * len(prompt) + [1] * 3  # no eos: the response was cut
    with pytest.raises(ValueError, match=r"long\.parquet row 1: \d+ tokens, over data\.max_length"):
        SFTDataset(path, tokenizer, max_length=len(prompt) + 3, truncation="error")
    with pytest.raises(ValueError, match=r"long\.parquet row 1: prompt and response_prefix are \d+ tokens"):
        SFTDataset(path, tokenizer, max_length=len(prompt))


def test_missing_file_column_or_bad_value_is_named(tmp_path, tokenizer):
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        SFTDataset(str(tmp_path / "nope.parquet"), tokenizer)
    path = write(tmp_path / "noresp.parquet", {"prompt": ["Hi"], "answer": ["Hello"]})
    with pytest.raises(ValueError, match=r"noresp\.parquet has no column 'response'.*'prompt', 'answer'"):
        SFTDataset(path, tokenizer)
    assert len(SFTDataset(path, tokenizer, response_key="answer")) == 1
    path = write(tmp_path / "badresp.parquet", {"prompt": ["Hi", "Hi"], "response": ["Hello", None]})
    with pytest.raises(ValueError, match=r"badresp\.parquet row 1: column 'response' must be a string"):
        SFTDataset(path, tokenizer)


def test_messages_shape_trains_on_the_last_assistant_turn(tmp_path, tokenizer):
    messages = [
        {"role": "system", "content": "Simulate a search engine."},
        {"role": "user", "content": "Query: Eiffel Tower"},
        {"role": "assistant", "content": "Doc 1: The Eiffel Tower was completed in 1889."},
    ]
    path = write(tmp_path / "simulation.parquet", {"messages": [messages]})
    row = SFTDataset(path, tokenizer)[0]
    prompt = ids(tokenizer, tokenizer.apply_chat_template(messages[:2], add_generation_prompt=True, tokenize=False))
    response = ids(tokenizer, messages[2]["content"]) + [tokenizer.eos_token_id]
    assert row["input_ids"].tolist() == prompt + response
    assert row["loss_mask"].tolist() == [0] * len(prompt) + [1] * len(response)
    path = write(tmp_path / "nouser.parquet", {"messages": [messages[:2]]})
    with pytest.raises(ValueError, match=r"nouser\.parquet row 0: column 'messages' must end with an assistant turn"):
        SFTDataset(path, tokenizer)


def test_collate_right_pads_to_the_longest_row(tmp_path, tokenizer):
    path = write(tmp_path / "pad.parquet", {"prompt": ["Hi", "A longer prompt here"], "response": ["Hello", "Yes"]})
    ds = SFTDataset(path, tokenizer)
    batch = ds.collate([ds[0], ds[1]])
    lengths = [len(ds[0]["input_ids"]), len(ds[1]["input_ids"])]
    assert batch["input_ids"].shape == (2, max(lengths))
    for j, n in enumerate(lengths):
        assert batch["attention_mask"][j].tolist() == [1] * n + [0] * (max(lengths) - n)
        assert batch["position_ids"][j, :n].tolist() == list(range(n))
        assert batch["input_ids"][j, :n].tolist() == ds[j]["input_ids"].tolist()
        assert torch.all(batch["input_ids"][j, n:] == tokenizer.pad_token_id)
        assert batch["loss_mask"][j].tolist() == ds[j]["loss_mask"].tolist() + [0] * (max(lengths) - n)
