"""One GRPO run with Hugging Face TRL's GRPOTrainer, the other side of ``benchmarks/vs_trl.py``.

Runs in a virtual environment with TRL installed (it imports nothing of this project) and writes
one JSON line per optimizer step to --out: the step's wall time and TRL's mean completion length.

    python benchmarks/trl_grpo.py --model DIR --data FILE.parquet --reward FILE.py --out FILE.jsonl
        [--prompts 16] [--n 4] [--tokens 32] [--steps 12] [--lr 1e-5] [--seed 0]
"""

import argparse
import importlib.util
import json
import time

from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import GRPOConfig, GRPOTrainer


def load_score(path: str):
    spec = importlib.util.spec_from_file_location("reward", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.compute_score


class StepTimes(TrainerCallback):
    """Wall time of every optimizer step, written with the mean completion length TRL logs after it."""

    def __init__(self, path: str):
        self.file = open(path, "w")
        self.start = self.seconds = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds = time.perf_counter() - self.start

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "completions/mean_length" in logs:  # a step's log, not the run's summary
            record = {"step": state.global_step, "seconds": self.seconds, "length": logs["completions/mean_length"]}
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--reward", required=True, help="a file defining compute_score(data_source, solution_str)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    score = load_score(args.reward)

    def reward(completions, **kwargs):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [float(score("bench", text)["score"]) for text in texts]

    dataset = load_dataset("parquet", data_files=args.data, split="train").select_columns(["prompt"])
    config = GRPOConfig(
        output_dir=args.out + ".trainer",
        per_device_train_batch_size=args.prompts * args.n,
        gradient_accumulation_steps=1,
        num_generations=args.n,
        max_completion_length=args.tokens,
        num_iterations=1,
        beta=0.0,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        temperature=1.0,
        max_steps=args.steps,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        seed=args.seed,
        disable_tqdm=True,
    )
    model = AutoModelForCausalLM.from_pretrained(args.model)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    times = StepTimes(args.out)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[times],
    )
    trainer.train()


if __name__ == "__main__":
    main()
