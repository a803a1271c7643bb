"""A small learnable task for the engine on CPU: answer with digits only.

The script writes a tiny random Qwen2-architecture model, a locally built tokenizer and a parquet
train/test set under --out, then trains with 2 FSDP worker processes on CPU. The reward (reward.py)
is the share of digits in the response, so a random policy starts near the digits' share of the
vocabulary and a learning one climbs towards 1.

    python examples/digits/train.py --out runs/digits --algo grpo [hydra overrides ...]

Metrics go to <out>/checkpoints/<algo>/metrics.jsonl, the workers' output to
<out>/checkpoints/<algo>/logs/.
"""

import argparse
import os
import random

import pandas as pd

from verl.trainer.run import load_config, run_ppo
from verl.utils.tiny_model import build_tiny_model

HERE = os.path.dirname(os.path.abspath(__file__))
SUBJECTS = ["a number", "a year", "a phone number", "a price", "a code", "a count", "a date", "an amount"]
STYLES = [
    "Write {s} using digits only.",
    "Reply with {s}, digits only.",
    "Give {s} in digits.",
    "Only digits: {s}.",
    "Answer with {s}. Use digits.",
]

ALGORITHMS = {
    "grpo": ["algorithm.adv_estimator=grpo", "actor_rollout_ref.actor.use_kl_loss=true"],
    "reinforce": ["algorithm.adv_estimator=reinforce", "actor_rollout_ref.actor.use_kl_loss=true"],
    "gae": [
        "algorithm.adv_estimator=gae",
        "algorithm.use_kl_in_reward=true",
        "critic.optim.lr=1e-3",
        "trainer.critic_warmup=0",
    ],
}


def write_data(out: str, n_train: int = 256, n_test: int = 32, seed: int = 0) -> tuple[str, str]:
    rng = random.Random(seed)
    rows = [
        {
            "prompt": [{"role": "user", "content": rng.choice(STYLES).format(s=rng.choice(SUBJECTS))}],
            "data_source": "digits",
            "reward_model": {"ground_truth": ""},
            "extra_info": {"index": i},
        }
        for i in range(n_train + n_test)
    ]
    os.makedirs(out, exist_ok=True)
    paths = os.path.join(out, "train.parquet"), os.path.join(out, "test.parquet")
    pd.DataFrame(rows[:n_train]).to_parquet(paths[0])
    pd.DataFrame(rows[n_train:]).to_parquet(paths[1])
    return paths


def overrides_for(out: str, algo: str, heads: int = 4, seed: int = 0) -> list[str]:
    train, test = write_data(os.path.join(out, "data"), seed=seed)
    model = os.path.join(out, "model")
    if not os.path.exists(os.path.join(model, "config.json")):
        build_tiny_model(
            model,
            vocab_size=400,
            hidden_size=64,
            intermediate_size=128,
            num_layers=2,
            num_heads=heads,
            num_kv_heads=min(2, heads),
            seed=seed,
        )
    return [
        f"data.train_files={train}",
        f"data.val_files={test}",
        "data.train_batch_size=16",
        "data.max_prompt_length=48",
        "data.max_response_length=12",
        f"actor_rollout_ref.model.path={model}",
        "actor_rollout_ref.actor.optim.lr=2e-3",
        "actor_rollout_ref.actor.ppo_mini_batch_size=16",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=32",
        "actor_rollout_ref.rollout.n=4",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=32",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=32",
        "critic.ppo_micro_batch_size_per_gpu=32",
        f"custom_reward_function.path={os.path.join(HERE, 'reward.py')}",
        "trainer.device=cpu",
        "trainer.n_gpus_per_node=2",
        "trainer.total_training_steps=30",
        "trainer.test_freq=10",
        "trainer.save_freq=-1",
        "trainer.logger=[console,file]",
        f"trainer.default_local_dir={os.path.join(out, 'checkpoints', algo)}",
        f"trainer.experiment_name=digits_{algo}",
    ] + ALGORITHMS[algo]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/digits", help="folder for data, model, checkpoints and metrics")
    parser.add_argument("--algo", choices=sorted(ALGORITHMS), default="grpo")
    parser.add_argument(
        "--heads",
        type=int,
        default=4,
        help="attention heads of the tiny model; with actor_rollout_ref.rollout.name=vllm on a CPU use 2 "
        "(vLLM's CPU attention needs heads of at least 32 dimensions)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the model's initial weights")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, applied last")
    args = parser.parse_intermixed_args()  # flags and overrides in any order
    run_ppo(load_config(overrides_for(args.out, args.algo, args.heads, args.seed) + args.overrides))
    print("metrics:", os.path.join(args.out, "checkpoints", args.algo, "metrics.jsonl"))


if __name__ == "__main__":
    main()
