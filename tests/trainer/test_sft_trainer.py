"""Supervised fine-tuning on the Ray engine: config, the loss, and 2-rank CPU runs with resume."""

import json
import os
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd
import pytest
import ray
import torch
from hydra.errors import ConfigCompositionException
from transformers import AutoModelForCausalLM, AutoTokenizer

import verl.config
from verl.algos.core_algos import agg_loss
from verl.config.sft import SFTConfig
from verl.protocol import DataProto
from verl.trainer.data_loader import ResumableBatches
from verl.trainer.run import load_sft_config as load_config
from verl.trainer.run import load_sft_datasets as load_datasets
from verl.trainer.run import run_sft
from verl.utils import config_yaml
from verl.utils.fsdp_utils import build_optimizer
from verl.utils.tiny_model import build_tiny_model
from verl.workers.sft_worker import next_token_nll, train_on_batch

YAML_PATH = os.path.join(os.path.dirname(verl.config.__file__), "sft_trainer.yaml")

# Answers of different lengths, so the two ranks hold different numbers of loss tokens.
QA = [
    ("Who wrote Hamlet?", "Shakespeare."),
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Which is the highest mountain?", "Mount Everest is the highest mountain above sea level, at 8,849 metres."),
    ("When was the United Nations founded?", "In 1945."),
    ("Where does the Nile flow?", "Through Cairo."),
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    model = build_tiny_model(root / "model", vocab_size=300, hidden_size=32, intermediate_size=64)
    rows = [{"prompt": [{"role": "user", "content": q}], "response": a} for q, a in QA]
    pd.DataFrame(rows * 4).to_parquet(root / "train.parquet")
    pd.DataFrame(rows).to_parquet(root / "val.parquet")  # 5 rows: the dispatcher pads them to 6 for 2 ranks
    return root, model


def overrides(root, model, **changes) -> list[str]:
    base = {
        "data.train_files": root / "train.parquet",
        "data.val_files": root / "val.parquet",
        "model.path": model,
        "data.train_batch_size": 8,
        "data.micro_batch_size_per_gpu": 3,  # 4 rows per rank: micro-batches of 3 + 1
        "optim.lr": 1e-2,
        "trainer.n_gpus_per_node": 2,
        "trainer.device": "cpu",
        "trainer.logger": "[console,file]",
        "trainer.save_freq": 2,
    }
    base.update(changes)
    return [f"{k}={v}" for k, v in base.items()]


def test_yaml_is_generated_from_the_dataclass():
    assert config_yaml.stale([YAML_PATH]) == []


def test_composed_config_is_typed_and_refuses_unknown_keys():
    config = load_config(["data.max_length=64", "optim.clip_grad=0.5", "trainer.logger=[console,file]"])
    assert isinstance(config, SFTConfig)
    assert (config.data.max_length, config.optim.clip_grad, config.trainer.logger) == (64, 0.5, ["console", "file"])
    assert config.trainer.default_local_dir == "checkpoints/criticsearch/sft"
    with pytest.raises(ConfigCompositionException, match="data.no_such_key"):
        load_config(["data.no_such_key=1"])
    with pytest.raises(ConfigCompositionException, match="data.no_such_key"):
        load_config(["+data.no_such_key=1"])


@pytest.mark.parametrize(
    "changes, message",
    [
        (["data.train_batch_size=7"], "data.train_batch_size=7"),
        (["data.micro_batch_size_per_gpu=0"], "data.micro_batch_size_per_gpu"),
        (["data.truncation=left"], "data.truncation"),
        (["trainer.resume_mode=sometimes"], "trainer.resume_mode"),
        (["trainer.resume_mode=resume_path", "trainer.resume_from_path=/nowhere/global_step_3"], "resume_from_path"),
        (["fsdp_config.mixed_precision.param_dtype=int8"], "fsdp_config.mixed_precision.param_dtype"),
        (["optim.warmup_style=linear"], "optim.warmup_style"),
        (["trainer.logger=[console,mlflow]"], "mlflow"),
    ],
)
def test_composing_the_config_names_the_offending_key(changes, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_config(["data.train_batch_size=8", "trainer.n_gpus_per_node=2", *changes])


def test_both_offloads_together_are_accepted():
    config = load_config(
        [
            "data.train_batch_size=8",
            "trainer.n_gpus_per_node=2",
            "fsdp_config.param_offload=true",
            "fsdp_config.optimizer_offload=true",
        ]
    )
    assert config.fsdp_config.param_offload and config.fsdp_config.optimizer_offload


@pytest.mark.parametrize(
    "key, value, exc, message",
    [
        ("data.train_files", "nowhere/train.parquet", FileNotFoundError, "nowhere/train.parquet"),
        ("model.path", "no_model", FileNotFoundError, "model.path.*no_model"),
        ("data.train_batch_size", 64, ValueError, "data.train_batch_size=64 is larger than the training set"),
    ],
)
def test_bad_setup_is_refused_before_ray_starts(setup, key, value, exc, message):
    root, model = setup
    value = root / value if isinstance(value, str) else value
    started_before = ray.is_initialized()
    with pytest.raises(exc, match=message):
        run_sft(load_config(overrides(root, model, **{key: value})))
    assert ray.is_initialized() == started_before


def test_unknown_key_on_the_command_line(setup):
    root, model = setup
    proc = subprocess.run(
        [sys.executable, "-m", "verl.trainer.main_sft", *overrides(root, model), "optim.no_such=3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "no_such" in proc.stderr
    assert "Started a local Ray instance" not in proc.stderr


@pytest.fixture(scope="module")
def train_set(setup):
    root, model = setup
    return load_datasets(load_config(overrides(root, model)), AutoTokenizer.from_pretrained(model))[0]


def test_loss_is_computed_on_response_tokens_only(setup, train_set):
    _, model_path = setup
    batch = train_set.collate([train_set[0], train_set[2]])
    with torch.no_grad():
        logits = AutoModelForCausalLM.from_pretrained(model_path)(
            **{k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
        ).logits

    def loss(labels):
        return agg_loss(*next_token_nll(logits, labels, batch["loss_mask"]), "token-mean")

    ids, trained = batch["input_ids"], batch["loss_mask"].bool()
    other = (ids + 7) % logits.shape[-1]
    assert torch.equal(loss(torch.where(trained, ids, other)), loss(ids))  # prompt and padding labels changed
    assert abs(loss(torch.where(trained, other, ids)) - loss(ids)) > 1e-2  # response labels changed
    log_probs = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    assert loss(ids).item() == pytest.approx(-log_probs[trained[:, 1:]].mean().item(), rel=1e-5)


def one_process_steps(model_path, batches: list[DataProto], micro: int, optim=None) -> tuple[dict, list[dict]]:
    """Steps an unsharded model with the optimizer of ``optim`` or, without one, with unclipped SGD
    at lr 1, so that the weights move by exactly the gradient."""
    model = AutoModelForCausalLM.from_pretrained(model_path)
    if optim is None:
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        scheduler, clip_grad = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0), 1e9
    else:
        (optimizer, scheduler), clip_grad = build_optimizer(model, optim), optim.clip_grad
    metrics = [train_on_batch(model, optimizer, scheduler, batch, micro, clip_grad, "cpu") for batch in batches]
    return model.state_dict(), metrics


def test_short_trailing_micro_batch_gives_the_full_batch_step(setup, train_set):
    _, model_path = setup
    data = DataProto.from_single_dict(train_set.collate([train_set[i] for i in range(5)]))
    whole, whole_metrics = one_process_steps(model_path, [data], 5)
    pieces, pieces_metrics = one_process_steps(model_path, [data], 2)  # 2 + 2 + 1 rows
    for name in whole:
        assert torch.allclose(whole[name], pieces[name], atol=1e-6), name
    assert pieces_metrics[0]["train/loss"] == pytest.approx(whole_metrics[0]["train/loss"], rel=1e-6)


def read_metrics(out) -> list[dict]:
    with open(out / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def runs(setup, ray_local, tmp_path_factory):
    """A straight 4-step run, and a 2-step run resumed to 4; both save every 2 steps."""
    root, model = setup
    out = tmp_path_factory.mktemp("runs")

    def train(name: str, steps: int) -> list[dict]:
        config = load_config(
            overrides(root, model, **{"trainer.default_local_dir": out / name, "trainer.total_training_steps": steps})
        )
        run_sft(config).shutdown()
        return read_metrics(out / name)

    straight = train("straight", 4)
    train("resumed", 2)
    return out, straight, train("resumed", 4)


def test_training_lowers_the_loss_and_validates_at_the_end(runs):
    _, straight, _ = runs
    assert [r["step"] for r in straight] == [1, 2, 3, 4]
    losses = [r["train/loss"] for r in straight]
    assert losses[-1] < losses[0] - 0.5, losses
    assert straight[-1]["val/loss"] < losses[-1]  # after the 4th update
    assert all("val/loss" not in r for r in straight[:-1])  # test_freq=-1: only at the end
    assert {"train/grad_norm", "train/lr", "timing_s/step", "training/epoch"} <= straight[0].keys()


def test_two_ranks_step_like_one_process_on_the_whole_batch(setup, train_set, runs):
    """The ranks hold different numbers of loss tokens and accumulate a short trailing micro-batch:
    weighted by the global token count, their steps equal one process stepping on each batch.
    The gradient norms compare the gradients themselves; AdamW's first steps hardly depend on their
    scale, and it magnifies rounding on near-zero gradients, hence the looser weight tolerance."""
    root, model = setup
    out, straight, _ = runs
    config = load_config(overrides(root, model))
    batches = ResumableBatches(train_set, 8, config.data.shuffle, config.data.seed, collate_fn=train_set.collate)
    weights, metrics = one_process_steps(model, [next(batches), next(batches)], 8, config.optim)
    for record, expected in zip(straight[:2], metrics, strict=True):  # the first two of the four steps
        for key in ("train/loss", "train/grad_norm"):
            assert record[key] == pytest.approx(expected[key], rel=1e-5), (record["step"], key)
    trained = AutoModelForCausalLM.from_pretrained(out / "straight" / "global_step_2" / "model" / "huggingface")
    for name, value in trained.state_dict().items():
        assert torch.allclose(value, weights[name], atol=1e-4), name


def test_resume_continues_at_the_next_step_as_if_never_stopped(runs):
    """With the dataloader position, optimizer, LR schedule and RNG states restored, steps 3-4 of
    the resumed run equal those of the straight run, and so do the final weights."""
    out, straight, resumed = runs
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]  # metrics.jsonl appended, not rewritten
    for a, b in zip(straight[2:], resumed[2:], strict=True):
        for key in ("train/loss", "train/grad_norm", "train/lr", "training/epoch"):
            assert b[key] == pytest.approx(a[key], rel=1e-6), (b["step"], key)
    assert resumed[-1]["val/loss"] == pytest.approx(straight[-1]["val/loss"], rel=1e-6)
    assert (out / "resumed" / "latest_checkpointed_iteration.txt").read_text() == "4"
    hf = {name: out / name / "global_step_4" / "model" / "huggingface" for name in ("straight", "resumed")}
    a, b = (AutoModelForCausalLM.from_pretrained(hf[name]).state_dict() for name in ("straight", "resumed"))
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name
    assert AutoTokenizer.from_pretrained(hf["resumed"]).eos_token == "<|im_end|>"
