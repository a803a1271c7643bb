"""Turn FlashRAG-style QA sets into the train/test parquet files the trainer reads.

    python -m zerosearch.data.prepare --train nq hotpotqa \\
        --test nq triviaqa popqa hotpotqa 2wikimultihopqa musique bamboogle \\
        --source DIR_OR_HUB_ID --out DATA_DIR [--template chat|base] \\
        [--max-train N] [--max-test N] [--seed 0]

A dataset NAME comes from ``{source}/{name}/{split}.jsonl`` (or ``.parquet``) when ``source`` is
a directory, otherwise from the hub with ``datasets.load_dataset(source, name, split=split)``.
Rows need ``question`` and ``golden_answers`` (a list of strings); ``id`` is kept when present, and
so are the facts of a multi-hop question's gold path (``extra_info.supporting``, what the critic's
path judge grades searches by): the titles of HotpotQA's and 2WikiMultihopQA's supporting
paragraphs then the answer, MuSiQue's supporting paragraphs (title and that hop's answer), or a
``supporting`` column already in this layout.
Training rows come from the ``train`` split; test rows from ``test``, or ``dev`` where a dataset
has no test split. The training file is shuffled, the test file keeps the order given.
"""

import argparse
import json
import math
import os
import random
import re
import sys
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
from tqdm import tqdm

from zerosearch.prompts import POLICY_INSTRUCTION, policy_prompt, with_critiques

ABILITY = "fact-reasoning"
TEMPLATES = ("chat", "base")
TRAIN_SPLITS = ("train",)
TEST_SPLITS = ("test", "dev")
FILE_TYPES = ("jsonl", "parquet")
# "name" or "owner/name": what is not a directory and not shaped like this is a mistyped path.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def prepare(
    train_names,
    test_names,
    source,
    out_dir,
    template="chat",
    max_train=None,
    max_test=None,
    seed=0,
    critiques=False,
) -> tuple[str, str]:
    """Write ``out_dir/train.parquet`` and ``out_dir/test.parquet``; return their paths. With
    ``critiques`` the instruction tells the policy a reviewer may comment after its searches (for
    runs with the interactive critic)."""
    if template not in TEMPLATES:
        raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")
    for flag, names in (("--train", train_names), ("--test", test_names)):
        if not names:
            raise ValueError(f"{flag} needs at least one dataset name")
        repeated = sorted(n for n, c in Counter(names).items() if c > 1)
        if repeated:
            raise ValueError(f"{flag} names {repeated} more than once; each dataset would be counted twice")
    for flag, cap in (("--max-train", max_train), ("--max-test", max_test)):
        if cap is not None and cap < 1:
            raise ValueError(f"{flag} must be a positive number of rows per dataset, got {cap}")
    if not os.path.isdir(source) and not HUB_ID.match(source):
        raise FileNotFoundError(
            f"--source {source!r} is neither an existing directory nor a hub id such as 'RUC-NLPIR/FlashRAG_datasets'"
        )

    train = _collect(train_names, source, TRAIN_SPLITS, max_train, seed)
    # One seeded shuffle of the merged sets, so batches mix datasets and reruns agree.
    random.Random(seed).shuffle(train)
    test = _collect(test_names, source, TEST_SPLITS, max_test, seed)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    instruction = with_critiques(POLICY_INSTRUCTION) if critiques else POLICY_INSTRUCTION
    return (
        write_split(train, "train", template, out, instruction),
        write_split(test, "test", template, out, instruction),
    )


def _collect(names, source, splits, cap, seed) -> list[tuple[str, dict]]:
    """(dataset name, example) pairs, datasets in the order given, rows in file order."""
    examples: list[tuple[str, dict]] = []
    for name in names:
        where, records = _read(source, name, splits)
        if not records:
            raise ValueError(f"dataset '{name}': {where} has no rows")
        keep = list(range(len(records)))
        if cap is not None and cap < len(records):
            keep = sorted(random.Random(seed).sample(keep, cap))
        examples.extend((name, _example(name, where, i, records[i])) for i in keep)
    return examples


def _read(source, name, splits) -> tuple[str, list]:
    """(where the rows came from, the rows) for the first of ``splits`` the dataset has."""
    if os.path.isdir(source):
        folder = Path(source) / name
        if not folder.is_dir():
            raise FileNotFoundError(f"dataset '{name}': no folder {folder} under --source {source}")
        for split in splits:
            for kind in FILE_TYPES:
                path = folder / f"{split}.{kind}"
                if path.is_file():
                    rows = _read_jsonl(path) if kind == "jsonl" else pd.read_parquet(path).to_dict("records")
                    return str(path), rows
        wanted = " or ".join(f"{s}.{k}" for s in splits for k in FILE_TYPES)
        raise FileNotFoundError(f"dataset '{name}': {folder} has no {wanted}")

    available = datasets.get_dataset_split_names(source, name)
    for split in splits:
        if split in available:
            return f"hub {source} ({name}, {split})", list(datasets.load_dataset(source, name, split=split))
    raise ValueError(f"dataset '{name}': hub {source} has splits {available}, none of {list(splits)}")


def _read_jsonl(path: Path) -> list:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path} line {line_no}: not valid JSON ({e})") from None
    return rows


def _example(name, where, i, record) -> dict:
    """The question, gold answers and id of one row, checked."""

    def fail(what):
        return ValueError(f"dataset '{name}': {where} row {i}: {what}")

    if not isinstance(record, dict):
        raise fail(f"expected an object with 'question' and 'golden_answers', got {record!r:.200}")
    for column in ("question", "golden_answers"):
        if column not in record:
            raise fail(f"no column '{column}'; the row has {sorted(record)}")
    question = record["question"]
    if not isinstance(question, str) or not question.strip():
        raise fail(f"'question' must be a non-empty string, got {question!r:.200}")
    answers = record["golden_answers"]
    # Parquet hands lists back as numpy arrays; a lone string is one answer.
    answers = [answers] if isinstance(answers, str) else answers
    if (
        not isinstance(answers, (list, tuple, np.ndarray))
        or len(answers) == 0
        or not all(isinstance(a, str) for a in answers)
    ):
        raise fail(f"'golden_answers' must be a non-empty list of strings, got {record['golden_answers']!r:.200}")
    raw_id = record.get("id")
    missing_id = raw_id is None or (isinstance(raw_id, float) and math.isnan(raw_id))
    try:
        supporting = _supporting(record, answers[0])
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise fail(f"its supporting facts cannot be read ({type(e).__name__}: {e})") from None
    return {
        "question": question.strip(),
        "answers": list(answers),
        "id": "" if missing_id else str(raw_id),
        "supporting": supporting,
    }


def _listed(value) -> list:
    return list(value) if isinstance(value, (list, tuple, np.ndarray)) else []


def _supporting(record: dict, answer: str) -> list[list[str]]:
    """The gold path's facts of a row, each a list of phrases one document states; [] when the row
    has none. Layouts: ``supporting`` (already facts); MuSiQue's ``question_decomposition`` with
    ``paragraphs`` (each hop: its paragraph's title and that hop's answer); ``supporting_facts``
    (HotpotQA, 2WikiMultihopQA: [[title, sent_id], ...], or FlashRAG's {"title": [...], "sent_id":
    [...]}), at the top or under ``metadata``: each supporting paragraph's title, in order, then
    ``answer``. Titles, not sentences: a simulated or retrieved document names the entity but
    seldom repeats a sentence word for word, and the answer fact keeps the last hop's search useful
    when an earlier document already named its entity."""
    if record.get("supporting") is not None:
        return [[str(p) for p in ([fact] if isinstance(fact, str) else fact)] for fact in record["supporting"]]
    meta: dict = record["metadata"] if isinstance(record.get("metadata"), dict) else {}
    decomposition = _listed(meta.get("question_decomposition", record.get("question_decomposition")))
    if decomposition:
        paragraphs = _listed(meta.get("paragraphs", record.get("paragraphs")))
        by_index = {p["idx"]: p for p in paragraphs}
        return [
            [by_index[hop["paragraph_support_idx"]]["title"], str(hop["answer"])]
            for hop in decomposition
            if hop.get("paragraph_support_idx") is not None
        ]
    facts = meta.get("supporting_facts", record.get("supporting_facts"))
    if facts is None:
        return []
    titles = list(facts["title"]) if isinstance(facts, dict) else [f[0] for f in facts]
    found: list[list[str]] = []
    for title in titles:
        # "Blue Film (1999 film)": a document names the film, not Wikipedia's disambiguation
        fact = [re.sub(r"\s*\([^()]*\)$", "", str(title)).strip() or str(title)]
        if fact not in found:
            found.append(fact)
    return [*found, [answer]] if found and [answer] not in found else found


def write_split(examples, split, template, out: Path, instruction: str = POLICY_INSTRUCTION) -> str:
    rows = []
    for index, (name, ex) in enumerate(tqdm(examples, desc=f"{split} rows", unit="row", disable=None)):
        text = policy_prompt(ex["question"], instruction)
        rows.append(
            {
                "data_source": name,
                # Instruct models get the text through their chat template; base models get it as is.
                "prompt": [{"role": "user", "content": text}] if template == "chat" else text,
                "ability": ABILITY,
                "reward_model": {"style": "rule", "ground_truth": {"target": ex["answers"]}},
                "extra_info": {"split": split, "index": index, "question": ex["question"], "id": ex["id"]}
                | ({"supporting": [list(fact) for fact in ex["supporting"]]} if ex.get("supporting") else {}),
            }
        )
    path = out / f"{split}.parquet"
    pd.DataFrame(rows).to_parquet(path, index=False)
    counts = ", ".join(f"{name}: {n}" for name, n in Counter(name for name, _ in examples).items())
    print(f"{path}: {len(rows)} rows ({counts})")
    return str(path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m zerosearch.data.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", nargs="+", required=True, metavar="NAME", help="datasets merged into train.parquet")
    parser.add_argument(
        "--test", nargs="+", required=True, metavar="NAME", help="datasets concatenated into test.parquet"
    )
    parser.add_argument("--source", required=True, help="folder of {name}/{split}.jsonl|.parquet, or a hub dataset id")
    parser.add_argument("--out", required=True, help="folder to write train.parquet and test.parquet into")
    parser.add_argument(
        "--template",
        choices=TEMPLATES,
        default="chat",
        help="chat: a user message for instruct models; base: the plain prompt text",
    )
    parser.add_argument("--max-train", type=int, help="at most this many training rows per dataset (seeded sample)")
    parser.add_argument("--max-test", type=int, help="at most this many test rows per dataset (seeded sample)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--critiques",
        action="store_true",
        help="the instruction announces the critic's comments after searches (critictor.interactive.enable)",
    )
    args = parser.parse_args(argv)
    try:
        prepare(
            args.train,
            args.test,
            args.source,
            args.out,
            template=args.template,
            max_train=args.max_train,
            max_test=args.max_test,
            seed=args.seed,
            critiques=args.critiques,
        )
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
