import logging
import os

# huggingface_hub reads this once, when transformers is first imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd
import pytest
import torch

from verl.utils.dataset import RLHFDataset, collate_fn
from verl.utils.tiny_model import build_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer([], 400)


@pytest.fixture(scope="module")
def base_tokenizer():
    tok = build_tokenizer([], 400)
    tok.chat_template = None
    return tok


def user(text):
    return [{"role": "user", "content": text}]


def write(path, rows):
    pd.DataFrame(rows).to_parquet(path)
    return str(path)


@pytest.fixture
def qa_file(tmp_path):
    return write(
        tmp_path / "qa.parquet",
        {
            "prompt": [user("Who wrote Hamlet?"), user("Capital of France?")],
            "data_source": ["nq", "hotpotqa"],
            "reward_model": [{"ground_truth": {"target": ["Shakespeare"]}}, {"ground_truth": {"target": ["Paris"]}}],
            "extra_info": [{"index": 10, "split": "train"}, {"index": 11, "split": "train"}],
        },
    )


def test_chat_template_row(qa_file, tokenizer):
    ds = RLHFDataset(qa_file, tokenizer, max_prompt_length=32)
    assert len(ds) == 2
    row = ds[0]
    assert row["raw_prompt"] == "<|im_start|>user\nWho wrote Hamlet?<|im_end|>\n<|im_start|>assistant\n"
    assert row["data_source"] == "nq"
    assert row["reward_model"]["ground_truth"]["target"][0] == "Shakespeare"
    assert row["extra_info"]["split"] == "train"
    assert row["index"] == 10

    ids, mask, pos = row["input_ids"], row["attention_mask"], row["position_ids"]
    assert ids.dtype == torch.long and ids.shape == mask.shape == pos.shape == (32,)
    n = int(mask.sum())
    real = tokenizer(row["raw_prompt"], add_special_tokens=False)["input_ids"]
    assert n == len(real)
    # Left padding: pads first, then the prompt flush against the right edge.
    assert ids[: 32 - n].tolist() == [tokenizer.pad_token_id] * (32 - n)
    assert ids[32 - n :].tolist() == real
    assert mask.tolist() == [0] * (32 - n) + [1] * n
    assert pos.tolist() == [0] * (32 - n) + list(range(n))


def test_base_model_joins_contents(tmp_path, base_tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who?"}]
    path = write(tmp_path / "base.parquet", {"prompt": [messages], "data_source": ["nq"]})
    row = RLHFDataset(path, base_tokenizer, max_prompt_length=64)[0]
    assert row["raw_prompt"] == "Be brief.\nWho?"
    assert row["reward_model"] == {} and row["extra_info"] == {}
    assert row["index"] == 0


def test_index_defaults_to_position_across_files(tmp_path, tokenizer):
    first = write(tmp_path / "a.parquet", {"prompt": [user("one"), user("two")], "data_source": ["x", "x"]})
    second = write(tmp_path / "b.parquet", {"prompt": [user("three")], "data_source": ["y"]})
    ds = RLHFDataset([first, second], tokenizer, max_prompt_length=64)
    assert [ds[i]["index"] for i in range(len(ds))] == [0, 1, 2]
    assert ds[2]["data_source"] == "y"


def test_overlong_prompt_filtered(tmp_path, tokenizer, caplog):
    path = write(
        tmp_path / "long.parquet",
        {"prompt": [user("short"), user("word " * 50), user("also short")], "data_source": ["nq"] * 3},
    )
    with caplog.at_level(logging.WARNING, logger="verl.utils.dataset"):
        ds = RLHFDataset(path, tokenizer, max_prompt_length=64)
    assert len(ds) == 2
    assert "dropped 1 of 3" in caplog.text and path in caplog.text
    assert ds[1]["raw_prompt"].startswith("<|im_start|>user\nalso short")


def test_overlong_prompt_error_names_file_and_row(tmp_path, tokenizer):
    path = write(tmp_path / "long.parquet", {"prompt": [user("short"), user("word " * 50)], "data_source": ["nq"] * 2})
    with pytest.raises(ValueError, match=r"long\.parquet row 1: prompt is \d+ tokens"):
        RLHFDataset(path, tokenizer, max_prompt_length=64, filter_overlong_prompts=False)


@pytest.mark.parametrize("truncation", ["left", "right"])
def test_overlong_prompt_is_cut_and_counted_when_not_filtered(tmp_path, tokenizer, caplog, truncation):
    long_prompt = user("first " + "word " * 50 + "last")
    path = write(tmp_path / "long.parquet", {"prompt": [user("short"), long_prompt], "data_source": ["nq"] * 2})
    with caplog.at_level(logging.WARNING, logger="verl.utils.dataset"):
        ds = RLHFDataset(path, tokenizer, max_prompt_length=32, filter_overlong_prompts=False, truncation=truncation)
    assert len(ds) == 2 and ds.truncated == 1 and "cut 1 of 2" in caplog.text
    full = tokenizer.encode(ds[1]["raw_prompt"], add_special_tokens=False)
    kept = ds[1]["input_ids"].tolist()
    assert kept == (full[-32:] if truncation == "left" else full[:32]) and ds[1]["attention_mask"].all()


def test_columns_beyond_the_known_ones_travel_with_the_row(tmp_path, tokenizer):
    """ZeroSearch's data keeps question and golden_answers as top-level columns; a file without
    them still batches with one that has them."""
    with_columns = write(
        tmp_path / "zs.parquet",
        {"prompt": [user("q?")], "data_source": ["nq"], "question": ["q?"], "golden_answers": [["a", "b"]]},
    )
    plain = write(tmp_path / "plain.parquet", {"prompt": [user("r?")], "data_source": ["nq"]})
    ds = RLHFDataset([with_columns, plain], tokenizer, max_prompt_length=32)
    batch = collate_fn([ds[0], ds[1]])
    assert batch["question"].tolist() == ["q?", None]
    assert list(batch["golden_answers"][0]) == ["a", "b"] and batch["golden_answers"][1] is None


def test_missing_file(tmp_path, tokenizer):
    missing = str(tmp_path / "nope.parquet")
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        RLHFDataset(missing, tokenizer)


def test_missing_column(tmp_path, tokenizer):
    path = write(tmp_path / "nosource.parquet", {"prompt": [user("q")], "source": ["nq"]})
    with pytest.raises(ValueError, match=r"nosource\.parquet has no column 'data_source'.*'prompt', 'source'"):
        RLHFDataset(path, tokenizer)
    with pytest.raises(ValueError, match="no column 'question'"):
        RLHFDataset(path, tokenizer, prompt_key="question")


def test_malformed_prompt_names_row(tmp_path, tokenizer):
    path = write(tmp_path / "bad.parquet", {"prompt": ["plain string", ""], "data_source": ["nq", "nq"]})
    with pytest.raises(ValueError, match=r"bad\.parquet row 1: column 'prompt'"):
        RLHFDataset(path, tokenizer)


def test_plain_string_prompt_is_used_verbatim_without_chat_template(tmp_path, tokenizer):
    path = write(tmp_path / "base.parquet", {"prompt": ["Question: who?\n"], "data_source": ["nq"]})
    row = RLHFDataset(path, tokenizer, max_prompt_length=48)[0]
    assert row["raw_prompt"] == "Question: who?\n"
    ids = row["input_ids"][row["attention_mask"].bool()].tolist()
    assert ids == tokenizer.encode("Question: who?\n", add_special_tokens=False)


def test_collate(qa_file, tokenizer):
    ds = RLHFDataset(qa_file, tokenizer, max_prompt_length=48)
    batch = collate_fn([ds[0], ds[1]])
    for key in ("input_ids", "attention_mask", "position_ids"):
        assert isinstance(batch[key], torch.Tensor) and batch[key].shape == (2, 48)
    for key in ("raw_prompt", "data_source", "reward_model", "extra_info", "index"):
        assert isinstance(batch[key], np.ndarray) and batch[key].dtype == object and batch[key].shape == (2,)
    assert isinstance(batch["reward_model"][1], dict)
    assert batch["data_source"].tolist() == ["nq", "hotpotqa"]
    assert batch["index"].tolist() == [10, 11]
