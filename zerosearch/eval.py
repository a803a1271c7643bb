"""Evaluate a search agent: greedy multi-turn rollouts against a real search engine.

    python -m zerosearch.eval --model PATH_OR_CHECKPOINT --data test.parquet --engine corpus \
        --out eval_out [hydra overrides, e.g. search.corpus_path=corpus.jsonl search.topk=3]

Writes ``results.md`` and ``results.json`` (per data source: EM, cover-EM, F1, searches and
useless searches per question, answer rate) and ``trajectories.jsonl`` under --out, and prints the
table. A useless search is one the path judge (``zerosearch.critic.judges``) finds bringing no new
fact of the gold path: a repeat, or a search off the path.
"""

import argparse
import dataclasses
import json
import os
import typing
from collections import defaultdict
from typing import Any

import numpy as np
import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from verl.protocol import DataProto, RolloutSettings
from verl.trainer.data_loader import validation_batches
from verl.trainer.run import agent_tools
from verl.utils.batch_schema import Key
from verl.utils.config import choices_of
from verl.utils.dataset import RLHFDataset
from verl.workers.rollout.base import BaseRollout, SamplingParams, generate_batch
from verl.workers.rollout.hf_rollout import HFRollout
from verl.workers.rollout.vllm_rollout import VLLMRollout, check_servable
from zerosearch.config import EvalArguments, ZeroSearchConfig
from zerosearch.critic.judges import path_judge
from zerosearch.data.fields import row_golden_answers, row_question, row_supporting
from zerosearch.generation import SearchGenerationManager
from zerosearch.reward import QARewardManager
from zerosearch.train import load_config

ROW_METRICS = ("em", "cover_em", "f1", "searches", "useless", "answered")


class LocalRollout:
    """Answers ``generate_sequences`` like the trainer's rollout workers, from one in-process
    engine: evaluation needs no optimizer, no sharding and no Ray. Greedy, as evaluation is;
    ``greedy=False`` samples at temperature 1."""

    def __init__(self, rollout: BaseRollout, greedy: bool = True):
        self.rollout = rollout
        self.greedy = greedy

    def generate_sequences(self, prompts: DataProto) -> DataProto:
        settings = RolloutSettings.of(prompts)
        if settings.max_new_tokens is None:
            raise ValueError("LocalRollout serves a rollout loop that sets max_new_tokens per call")
        params = SamplingParams(
            max_new_tokens=settings.max_new_tokens, stop=list(settings.stop or []), greedy=self.greedy
        )
        return generate_batch(self.rollout, prompts, params)


def build_engine(config: ZeroSearchConfig, model_path: str, tokenizer: Any, device: str) -> BaseRollout:
    """The engine ``actor_rollout_ref.rollout.name`` names, in bf16 on GPU and fp32 on CPU."""
    rollout = config.actor_rollout_ref.rollout
    dtype = rollout.dtype or ("bfloat16" if device == "cuda" else "float32")
    if rollout.name == "vllm":
        check_servable(
            model_path, config.actor_rollout_ref.model.trust_remote_code, device, rollout.tensor_model_parallel_size
        )
        if rollout.load_format.startswith("dummy"):
            # No trainer syncs weights into this engine: it must read them from the checkpoint.
            rollout = dataclasses.replace(rollout, load_format="auto")
        return VLLMRollout(
            model_path,
            rollout,
            config.max_sequence_length(),
            dtype,
            device,
            seed=config.trainer.seed,
            pad_id=tokenizer.pad_token_id,
        )
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype))
    torch.nn.Module.to(model, device)  # transformers' own .to is typed for dtypes and quantisation
    return HFRollout(model, tokenizer)


def resolve_model_path(path: str) -> str:
    """A model folder or hub id; a trainer checkpoint ``global_step_N`` (the huggingface/ copy of
    its actor, or of its model for an SFT run); or a run folder, whose latest checkpoint is taken."""
    local = os.path.expanduser(path)
    if not os.path.exists(local):
        if path.startswith(("/", ".", "~")):
            raise FileNotFoundError(f"--model {path} does not exist")
        return path  # a hub id, loaded by from_pretrained
    latest = os.path.join(local, "latest_checkpointed_iteration.txt")
    if os.path.isfile(latest):
        with open(latest) as f:
            local = os.path.join(local, f"global_step_{f.read().strip()}")
    for sub in ("actor/huggingface", "model/huggingface", "huggingface", ""):
        candidate = os.path.join(local, sub)
        if os.path.isfile(os.path.join(candidate, "config.json")):
            return os.path.normpath(candidate)
    raise FileNotFoundError(
        f"--model {path}: no config.json there, nor in actor/huggingface/, model/huggingface/ or huggingface/"
    )


def evaluate(
    model_path: str,
    data_files: list[str],
    engine: str,
    out_dir: str,
    overrides: list[str],
    batch_size: int = 64,
    device: str | None = None,
) -> dict:
    config = load_config("zerosearch_grpo", [f"search.engine={engine}", *overrides])
    engine = config.search.engine
    model_path = resolve_model_path(model_path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    dataset = RLHFDataset(
        data_files,
        tokenizer,
        prompt_key=config.data.prompt_key,
        max_prompt_length=config.data.max_prompt_length,
        filter_overlong_prompts=False,
        truncation=config.data.truncation,
        tools=agent_tools(config),
    )
    # Evaluation runs on the real engine only; the training backend is never contacted.
    config.search.mode = engine
    rollout = LocalRollout(build_engine(config, model_path, tokenizer, device))
    manager = SearchGenerationManager(config, rollout, tokenizer)
    scorer = QARewardManager(config, tokenizer)
    os.makedirs(out_dir, exist_ok=True)
    per_source: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    with (
        open(os.path.join(out_dir, "trajectories.jsonl"), "w") as trajectories,
        tqdm(total=len(dataset), desc="evaluating") as progress,
    ):
        for batch in validation_batches(dataset, batch_size):
            batch.meta_info = {"rollout": RolloutSettings(validate=True)}
            out = manager.generate_sequences(batch)
            _, extra = scorer(out)
            for i in range(len(out)):
                source = out.non_tensor_batch["data_source"][i]
                record = _trajectory(out, i, tokenizer)
                row = {
                    "em": extra["em"][i],
                    "cover_em": extra["cover_em"][i],
                    "f1": extra["f1"][i],
                    "searches": out.non_tensor_batch["num_searches"][i],
                    "useless": useless_searches(record),
                    "answered": extra["answered"][i],
                }
                for key, value in row.items():
                    per_source[source][key].append(float(value))
                trajectories.write(json.dumps(record | row) + "\n")
            progress.update(len(batch))
    table = summarize(per_source)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump({"model": model_path, "engine": engine, "results": table}, f, indent=2)
    markdown = to_markdown(table)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(markdown + "\n")
    print(markdown)
    return table


def summarize(per_source: dict) -> dict[str, dict[str, float]]:
    """Mean of each metric per data source, then ``avg`` (the mean of the per-source means, as
    papers report) and ``all`` (the mean over every question)."""
    table = {
        source: {k: float(np.mean(v)) for k, v in metrics.items()} | {"n": len(metrics["em"])}
        for source, metrics in per_source.items()
    }
    everything = {k: [x for m in per_source.values() for x in m[k]] for k in ROW_METRICS}
    if everything["em"]:
        sources = list(table.values())
        table["avg"] = {k: float(np.mean([s[k] for s in sources])) for k in ROW_METRICS} | {"n": len(everything["em"])}
        table["all"] = {k: float(np.mean(v)) for k, v in everything.items()} | {"n": len(everything["em"])}
    return table


def to_markdown(table: dict) -> str:
    lines = [
        "| data source | n | EM | cover-EM | F1 | searches / question | useless / question | answer rate |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for source, m in table.items():
        lines.append(
            f"| {source} | {m['n']} | {m['em']:.3f} | {m['cover_em']:.3f} | {m['f1']:.3f} | "
            f"{m['searches']:.2f} | {m['useless']:.2f} | {m['answered']:.3f} |"
        )
    return "\n".join(lines)


def useless_searches(record: dict) -> int:
    """Searches of an evaluation trajectory that the path judge finds useless."""
    documents = [
        turn["documents"] for turn in record["turns"] if turn["kind"] == "search" and turn["documents"] is not None
    ]
    supporting = [tuple(fact) for fact in record["supporting"]]
    return sum(not useful for useful in path_judge(documents, record["golden_answers"], supporting))


def _trajectory(out: DataProto, i: int, tokenizer) -> dict:
    prompt_width = out.batch[Key.PROMPTS].shape[1]
    prompt = out.batch[Key.PROMPTS][i][out.batch[Key.ATTENTION_MASK][i, :prompt_width].bool()]
    response = out.batch[Key.RESPONSES][i][out.batch[Key.ATTENTION_MASK][i, prompt_width:].bool()]
    columns = out.non_tensor_batch
    return {
        "data_source": columns["data_source"][i],
        "question": row_question(columns, i),
        "golden_answers": row_golden_answers(columns, i),
        "supporting": [list(fact) for fact in row_supporting(columns, i)],
        "prompt": tokenizer.decode(prompt),
        "response": tokenizer.decode(response),
        "answer": columns["accepted_answer"][i],
        "turns": columns["turns"][i],  # each turn's action, and a search's documents
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    types = typing.get_type_hints(EvalArguments)
    for f in dataclasses.fields(EvalArguments):
        required = f.default is dataclasses.MISSING or f.default == ""  # a list's factory, or an empty name
        parser.add_argument(
            f"--{f.name.replace('_', '-')}",
            required=required,
            action="append" if types[f.name] == list[str] else "store",
            type=int if types[f.name] is int else str,
            default=None if required else f.default,
            choices=choices_of(f),
            help=f.metadata["help"],
        )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the zerosearch config")
    args = parser.parse_args()
    evaluate(args.model, args.data, args.engine, args.out, args.overrides, args.batch_size, args.device)


if __name__ == "__main__":
    main()
