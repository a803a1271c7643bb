import json
import os
import subprocess
import sys

# huggingface_hub reads this once, when transformers or datasets is first imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd
import pytest

from tests.conftest import REPO_ROOT
from verl.utils.dataset import RLHFDataset
from verl.utils.tiny_model import build_tokenizer
from zerosearch.data.fields import row_supporting
from zerosearch.data.prepare import prepare
from zerosearch.prompts import policy_prompt


def qa(name, split, n, with_id=True):
    rows = [
        {"question": f"{name} {split} question {i}?", "golden_answers": [f"{name}-{i}", f"alt {i}"]} for i in range(n)
    ]
    if with_id:
        for i, row in enumerate(rows):
            row["id"] = f"{split}_{i}"
    return rows


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_parquet(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path)


@pytest.fixture
def source(tmp_path):
    """nq: jsonl train/test; hotpotqa: parquet train and dev only; triviaqa: test without ids."""
    root = tmp_path / "qa"
    write_jsonl(root / "nq" / "train.jsonl", qa("nq", "train", 5))
    write_jsonl(root / "nq" / "test.jsonl", qa("nq", "test", 3))
    write_parquet(root / "hotpotqa" / "train.parquet", qa("hotpotqa", "train", 4))
    write_parquet(root / "hotpotqa" / "dev.parquet", qa("hotpotqa", "dev", 3))
    write_jsonl(root / "triviaqa" / "test.jsonl", qa("triviaqa", "test", 2, with_id=False))
    return root


def run(source, out, **kw):
    train, test = prepare(["nq", "hotpotqa"], ["nq", "hotpotqa", "triviaqa"], str(source), str(out), **kw)
    return pd.read_parquet(train), pd.read_parquet(test)


def test_rows_columns_and_indices(source, tmp_path):
    train, test = run(source, tmp_path / "out")
    assert len(train) == 9 and len(test) == 8
    for frame, split in ((train, "train"), (test, "test")):
        assert set(frame.columns) == {"data_source", "prompt", "ability", "reward_model", "extra_info"}
        assert sorted(e["index"] for e in frame["extra_info"]) == list(range(len(frame)))
        assert {e["split"] for e in frame["extra_info"]} == {split}
        assert set(frame["ability"]) == {"fact-reasoning"}
    row = test.iloc[0]
    assert row["data_source"] == "nq"
    assert list(row["prompt"]) == [{"role": "user", "content": policy_prompt("nq test question 0?")}]
    assert row["reward_model"]["style"] == "rule"
    assert list(row["reward_model"]["ground_truth"]["target"]) == ["nq-0", "alt 0"]
    assert row["extra_info"]["question"] == "nq test question 0?"
    assert row["extra_info"]["id"] == "test_0"


def test_test_file_keeps_order_and_falls_back_to_dev(source, tmp_path):
    _, test = run(source, tmp_path / "out")
    assert list(test["data_source"]) == ["nq"] * 3 + ["hotpotqa"] * 3 + ["triviaqa"] * 2
    questions = [e["question"] for e in test["extra_info"]]
    assert questions[3:6] == [f"hotpotqa dev question {i}?" for i in range(3)]
    assert [e["index"] for e in test["extra_info"]] == list(range(8))
    assert [e["id"] for e in test["extra_info"]][-2:] == ["", ""]


def test_train_is_shuffled_under_the_seed(source, tmp_path):
    def order(seed, name):
        train, _ = run(source, tmp_path / name, seed=seed)
        return [e["question"] for e in train["extra_info"]]

    merged = [f"nq train question {i}?" for i in range(5)] + [f"hotpotqa train question {i}?" for i in range(4)]
    first = order(0, "a")
    assert first == order(0, "b")
    assert first != merged and sorted(first) == sorted(merged)
    assert order(1, "c") != first


def test_base_template_writes_plain_text(source, tmp_path):
    train, test = run(source, tmp_path / "out", template="base")
    assert test["prompt"].iloc[0] == policy_prompt("nq test question 0?")
    assert all(isinstance(p, str) for p in train["prompt"])


def test_critiques_flag_announces_the_critic(source, tmp_path):
    from zerosearch.data.prepare import main
    from zerosearch.prompts import CRITIQUES_SENTENCE

    plain, _ = run(source, tmp_path / "plain")
    assert all(CRITIQUES_SENTENCE not in p[0]["content"] for p in plain["prompt"])
    main(["--train", "nq", "--test", "nq", "--source", str(source), "--out", str(tmp_path / "c"), "--critiques"])
    for split in ("train", "test"):
        for prompt in pd.read_parquet(tmp_path / "c" / f"{split}.parquet")["prompt"]:
            text = prompt[0]["content"]
            assert CRITIQUES_SENTENCE in text and text.index(CRITIQUES_SENTENCE) < text.index("Question:")


def test_caps_sample_each_dataset_with_the_seed(source, tmp_path):
    train, test = run(source, tmp_path / "a", max_train=2, max_test=1)
    assert train["data_source"].value_counts().to_dict() == {"nq": 2, "hotpotqa": 2}
    assert list(test["data_source"]) == ["nq", "hotpotqa", "triviaqa"]
    again, _ = run(source, tmp_path / "b", max_train=2, max_test=1)
    assert list(again["extra_info"].map(lambda e: e["question"])) == list(
        train["extra_info"].map(lambda e: e["question"])
    )
    _, wide = run(source, tmp_path / "c", max_test=2)
    nq = [e["question"] for e in wide["extra_info"] if e["question"].startswith("nq")]
    assert nq == sorted(nq)  # a sample keeps the file's order in the test file


def test_missing_dataset_folder(source, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dataset 'popqa': no folder .*popqa"):
        prepare(["nq"], ["popqa"], str(source), str(tmp_path / "out"))


def test_missing_split_file(source, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dataset 'triviaqa': .*triviaqa has no train.jsonl"):
        prepare(["triviaqa"], ["nq"], str(source), str(tmp_path / "out"))


def test_missing_golden_answers_column(source, tmp_path):
    write_jsonl(source / "popqa" / "test.jsonl", [{"question": "Who?", "answer": "x"}])
    with pytest.raises(ValueError, match=r"dataset 'popqa': .*popqa/test.jsonl row 0: no column 'golden_answers'"):
        prepare(["nq"], ["popqa"], str(source), str(tmp_path / "out"))


def test_source_neither_folder_nor_hub_id(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither an existing directory nor a hub id"):
        prepare(["nq"], ["nq"], str(tmp_path / "absent"), str(tmp_path / "out"))


def test_cli(source, tmp_path):
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "zerosearch.data.prepare",
        "--train",
        "nq",
        "hotpotqa",
        "--test",
        "nq",
        "triviaqa",
        "--source",
        str(source),
        "--out",
        str(out),
        "--template",
        "base",
        "--max-train",
        "3",
        "--seed",
        "7",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert f"{out / 'train.parquet'}: 6 rows (" in done.stdout and "nq: 3" in done.stdout
    assert f"{out / 'test.parquet'}: 5 rows (nq: 3, triviaqa: 2)" in done.stdout
    assert isinstance(pd.read_parquet(out / "train.parquet")["prompt"].iloc[0], str)

    bad = subprocess.run(
        cmd[:5] + ["popqa"] + cmd[6:], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert bad.returncode == 1
    assert "error: dataset 'popqa': no folder" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("template", ["chat", "base"])
def test_file_loads_in_rlhf_dataset(source, tmp_path, template):
    _, test_path = prepare(
        ["nq"], ["nq", "hotpotqa", "triviaqa"], str(source), str(tmp_path / "out"), template=template
    )
    tokenizer = build_tokenizer(["some text"], 300)
    dataset = RLHFDataset(test_path, tokenizer, max_prompt_length=2048, filter_overlong_prompts=False)
    assert len(dataset) == 8
    row = dataset[3]
    assert row["data_source"] == "hotpotqa" and row["index"] == 3
    assert list(row["reward_model"]["ground_truth"]["target"]) == ["hotpotqa-0", "alt 0"]
    text = policy_prompt("hotpotqa dev question 0?")
    if template == "chat":
        assert row["raw_prompt"] == tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
        )
    else:
        assert row["raw_prompt"] == text  # a base prompt bypasses the chat template


def test_supporting_facts_are_kept_from_each_layout(tmp_path):
    """HotpotQA as FlashRAG ships it (facts and context under metadata), as HotpotQA ships it
    (lists at the top), MuSiQue's decomposition, and this project's own layout; a row without facts
    stays without. HotpotQA's facts are its supporting titles (no disambiguation), then the answer."""
    root = tmp_path / "qa"
    flashrag = {
        "question": "Where was the director of Blue Film born?",
        "golden_answers": ["Oslo"],
        "metadata": {
            "supporting_facts": {
                "title": ["Blue Film (1999 film)", "Ann Berg", "Blue Film (1999 film)"],
                "sent_id": [1, 0, 1],
            },
            "context": {
                "title": ["Blue Film (1999 film)", "Ann Berg"],
                "sentences": [
                    ["Blue Film is a film.", " It was directed by Ann Berg."],
                    ["Ann Berg was born in Oslo."],
                ],
            },
        },
    }
    raw = {
        "question": "Who?",
        "golden_answers": ["x"],
        "supporting_facts": [["A", 0], ["B", 5]],  # B's sentence 5 does not exist: the title is all it takes
        "context": [["A", ["A is x."]], ["B", ["B."]]],
    }
    musique = {
        "question": "When was the founder of Dalo born?",
        "golden_answers": ["1850"],
        "metadata": {
            "question_decomposition": [
                {"question": "founder of Dalo", "answer": "Bi Ka", "paragraph_support_idx": 3},
                {"question": "when was #1 born", "answer": "1850", "paragraph_support_idx": 0},
            ],
            "paragraphs": [{"idx": 0, "title": "Bi Ka"}, {"idx": 3, "title": "Dalo"}],
        },
    }
    own = {"question": "Own?", "golden_answers": ["y"], "supporting": [["P", "y"]]}
    plain = {"question": "Plain?", "golden_answers": ["z"]}
    write_jsonl(root / "mixed" / "test.jsonl", [flashrag, raw, musique, own, plain])
    write_jsonl(root / "mixed" / "train.jsonl", [plain])
    _, test_path = prepare(["mixed"], ["mixed"], str(root), str(tmp_path / "out"))
    frame = pd.read_parquet(test_path)
    columns = {"extra_info": frame["extra_info"].to_numpy()}
    assert [row_supporting(columns, i) for i in range(len(frame))] == [
        (("Blue Film",), ("Ann Berg",), ("Oslo",)),  # in order, once each
        (("A",), ("B",), ("x",)),
        (("Dalo", "Bi Ka"), ("Bi Ka", "1850")),
        (("P", "y"),),
        (),
    ]
    write_jsonl(root / "broken" / "test.jsonl", [{**raw, "supporting_facts": {"titles": ["A"]}}])
    write_jsonl(root / "broken" / "train.jsonl", [plain])
    with pytest.raises(ValueError, match=r"row 0: its supporting facts cannot be read \(KeyError"):
        prepare(["broken"], ["broken"], str(root), str(tmp_path / "out2"))
