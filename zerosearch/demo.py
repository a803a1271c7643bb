"""The whole method in miniature on a CPU: simulation tuning, warm start, RL with simulated search
and the noise curriculum, then evaluation on a real engine.

    python -m zerosearch.demo [key=value ...]      # Hydra overrides of configs/demo.yaml

1. An invented world (``zerosearch.data.synthetic``) and one tokenizer trained on its texts.
2. Simulation tuning: a tiny LLM learns to play the search engine, useful or noisy on request.
3. Warm start: a tiny policy learns the tag protocol; it searches some questions and guesses others.
4. RL (GRPO by default) with the tuned simulator in-process as ``simulate_sft``, noise rising.
5. The warm-started and the RL-trained policy answer the held-out questions with the ``corpus``
   engine: EM, F1, searches per question and answer rate, before and after; and closed-book (every
   search returns nothing), so the EM gained by reading shows apart from what is remembered.
6. The critic (``critictor.enable``): RL runs again from the same warm start with the same seeds and
   steps, with turn rewards from the path judge (``critictor.judge=path``) or from a tiny critic LLM
   (``llm``) tuned on the path judge's verdicts about the first run's early rollouts, whose
   agreement with the path judge is measured on held-out trajectories. Both runs validate every
   step, and ``summary.json`` compares them (``critic``), with ``plots/critic_em.png`` overlaying
   their held-out EM.

Everything goes under ``out_dir``: data, models, checkpoints, ``metrics.jsonl``, ``plots/*.png``,
``summary.json`` and the tables it prints (``summary.md``); workers' output goes to each run's
``logs/``.

Over 400 lines on purpose: this is one pipeline, its phases short functions in the order above;
split across files, a reader would chase a single run from module to module.
"""

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import ray
from omegaconf import OmegaConf
from tqdm import tqdm
from transformers import AutoTokenizer

from verl.trainer.run import load_sft_config, run_sft
from verl.utils.reward_score.qa import cover_exact_match
from verl.utils.tiny_model import build_tiny_model, build_tokenizer
from zerosearch.critic.critics import LLMCritic, RuleCritic
from zerosearch.critic.tuning import judge_agreement, read_trajectories, tuning_rows
from zerosearch.data import synthetic, synthetic_tuning
from zerosearch.demo_config import DemoConfig, register_demo_schema
from zerosearch.eval import evaluate, resolve_model_path
from zerosearch.llm import ChatModelActor, LocalChatLLM
from zerosearch.plot import plot_run, plot_runs, read_metrics
from zerosearch.prompts import POLICY_INSTRUCTIONS, policy_prompt, simulator_messages
from zerosearch.search import CLOSED_BOOK
from zerosearch.train import load_config as load_train_config
from zerosearch.train import train

register_demo_schema()

# Each phase's prompt + response fits in this many tokens with the default world (checked by
# SFTDataset's truncation="error").
SFT_MAX_LENGTH = 384


def instruction(config: DemoConfig) -> str:
    return POLICY_INSTRUCTIONS[config.policy_instruction]


def redrawn(world: synthetic.World, n: int) -> list[synthetic.World]:
    """``n`` copies of the world with their facts drawn anew, the same for every phase."""
    return [synthetic.redraw_facts(world, seed=world.seed + 1 + k) for k in range(n)]


def world_texts(config: DemoConfig, world: synthetic.World) -> list[str]:
    """What both models will read and write, for training the shared tokenizer."""
    questions = world.train_questions + world.test_questions
    texts = [d["contents"] for d in world.documents]
    texts += [policy_prompt(q.question, instruction(config)) for q in questions]
    texts += [row["response"] for row in synthetic_tuning.warm_start_examples(world, search_rate=1.0)]
    texts += [
        simulator_messages(q.query, q.question, [q.answer], noisy, config.topk, "sft")[0]["content"]
        for q in questions
        for noisy in (False, True)
    ]
    return texts


def warm_start_rows(config: DemoConfig, world: synthetic.World) -> list[dict]:
    """The training questions searched at ``warm_start.search_rate`` and otherwise guessed, so the
    policy starts out searching some of the time; then ``search_practice`` passes with every question
    searched but the decision to search left untrained, each on the world with its facts redrawn: they
    teach searching well (copying names into queries, reading answers off documents, which no memory
    of the facts can replace) without teaching to search more."""
    topk, text = config.topk, instruction(config)
    useless = config.warm_start.useless_rate
    rows = synthetic_tuning.warm_start_examples(
        world, config.warm_start.search_rate, seed=world.seed, topk=topk, instruction=text, useless_rate=useless
    )
    for k, practice in enumerate(redrawn(world, config.warm_start.search_practice)):
        rows += synthetic_tuning.warm_start_examples(
            practice, 1.0, seed=world.seed + 1 + k, decide=False, topk=topk, instruction=text, useless_rate=useless
        )
    return rows


def simulation_rows(config: DemoConfig, world: synthetic.World) -> list[dict]:
    """``simulator.pairs`` tuning pairs, spread over the world and ``simulator.redrawn_worlds`` copies
    of it with other facts."""
    worlds = [world, *redrawn(world, config.simulator.redrawn_worlds)]
    share = -(-config.simulator.pairs // len(worlds))
    rows = [
        row for k, w in enumerate(worlds) for row in synthetic_tuning.simulation_pairs(w, config.topk, share, seed=k)
    ]
    return rows[: config.simulator.pairs]


def build_models(config: DemoConfig, world: synthetic.World, out: str) -> dict[str, str]:
    """The initial simulator, policy and critic, sharing one tokenizer."""
    tokenizer = build_tokenizer(world_texts(config, world), config.world.vocab_size)
    paths = {}
    models = (
        ("simulator", config.simulator.model),
        ("policy", config.warm_start.model),
        ("critic", config.critictor.model),
    )
    for name, model in models:
        # DemoModelConfig's fields are build_tiny_model's keyword arguments.
        paths[name] = str(
            build_tiny_model(
                os.path.join(out, "models", f"{name}_init"), tokenizer=tokenizer, **dataclasses.asdict(model)
            )
        )
    return paths


def tune(config: DemoConfig, phase, model_path: str, data_path: str, run_dir: str, name: str) -> str:
    """One supervised phase with ``main_sft``; returns the tuned model's folder."""
    workers = config.workers
    overrides = [
        f"data.train_files={data_path}",
        f"data.max_length={SFT_MAX_LENGTH}",
        "data.truncation=error",
        f"data.train_batch_size={phase.batch_size}",
        f"data.micro_batch_size_per_gpu={phase.batch_size // workers}",
        f"model.path={model_path}",
        f"optim.lr={phase.lr}",
        "optim.warmup_style=cosine",
        f"trainer.n_gpus_per_node={workers}",
        f"trainer.total_training_steps={phase.steps}",
        f"trainer.save_freq={phase.steps}",
        "trainer.logger=[file]",
        f"trainer.default_local_dir={run_dir}",
        f"trainer.experiment_name={name}",
        *phase.overrides,
    ]
    trainer = run_sft(load_sft_config(overrides))
    trainer.shutdown()
    return resolve_model_path(run_dir)


def simulator_answer_rates(model_path: str, world: synthetic.World, config: DemoConfig) -> dict[str, float]:
    """How often the tuned simulator's documents state the gold answer, asked for useful and for
    noisy results, on requests about held-out questions it was never tuned on: each for the hop
    whose document states the answer."""
    pairs = synthetic_tuning.simulation_pairs(
        world,
        config.topk,
        config.simulator.eval_pairs,
        seed=world.seed + 1,
        questions=world.test_questions,
        answering_hop_only=True,
    )
    simulator = ChatModelActor(model_path)
    stated: dict[bool, list[float]] = {True: [], False: []}
    batch = 32
    for start in tqdm(range(0, len(pairs), batch), desc="simulator check"):
        rows = pairs[start : start + batch]
        replies = simulator.generate([list(r["prompt"]) for r in rows], config.simulator.max_tokens, 0.0)
        for row, reply in zip(rows, replies, strict=True):
            stated[row["noisy"]].append(cover_exact_match(reply, [row["answer"]]))
    return {
        "useful_answer_rate": sum(stated[False]) / max(len(stated[False]), 1),
        "noisy_answer_rate": sum(stated[True]) / max(len(stated[True]), 1),
    }


def prompt_length(tokenizer_path: str, files: list[str]) -> int:
    """Tokens in the longest prompt of ``files``: RL and evaluation pad every prompt to it."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    texts = [
        tokenizer.apply_chat_template(list(p), add_generation_prompt=True, tokenize=False)
        for f in files
        for p in pd.read_parquet(f)["prompt"]
    ]
    return max(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])


def search_overrides(config: DemoConfig, data: dict) -> list[str]:
    """The agent and engine settings shared by RL and evaluation; ``data`` holds the corpus path and
    the prompt length."""
    return [
        f"actor_rollout_ref.rollout.name={config.rl.rollout}",
        # per-trajectory turns where the engine batches continuously; hf keeps its KV cache only in lockstep
        f"actor_rollout_ref.rollout.agent.scheduling={'async' if config.rl.rollout == 'vllm' else 'batch'}",
        f"search.corpus_path={data['corpus']}",
        f"search.topk={config.topk}",
        f"actor_rollout_ref.rollout.agent.max_turns={config.max_turns}",
        f"data.max_prompt_length={data['prompt_length']}",
        f"data.max_response_length={config.rl.max_response_length}",
        f"actor_rollout_ref.rollout.agent.max_obs_length={config.rl.max_obs_length}",
    ]


def turn_rewards(config: DemoConfig, critic: str) -> list[str]:
    """The overrides that give an RL run the retrospective critic's turn rewards: ``critic`` is a
    rule judge (path, answer, shuffled) or a tuned critic LLM's folder."""
    c = config.critictor
    overrides = [
        "critictor.retrospective.enable=true",
        f"critictor.turn_reward_coef={c.turn_reward_coef}",
        f"critictor.retrospective.penalize_useless={c.penalize_useless}",
        f"critictor.turn_reward_norm={c.turn_reward_norm}",
    ]
    if critic in RuleCritic.JUDGES:
        return overrides + ["critictor.backend=rule", f"critictor.rule_judge={critic}"]
    return overrides + [
        "critictor.backend=in_process",
        f"critictor.model={critic}",
        "critictor.style=sft",
        f"critictor.max_tokens={c.max_tokens}",
        "critictor.temperature=0",
    ]


def reinforce(
    config: DemoConfig, policy: str, simulator: str, data: dict, run_dir: str, extra: Sequence[str] = ()
) -> str:
    """One RL run from ``policy`` with further trainer overrides ``extra`` (e.g. ``turn_rewards``).
    Rollouts are dumped under ``run_dir/rollouts``, where a critic's tuning data comes from."""
    rl, workers = config.rl, config.workers
    rollouts = rl.batch_size * rl.n
    overrides = [
        f"data.train_files={data['train']}",
        f"data.val_files={data['test']}",
        f"data.train_batch_size={rl.batch_size}",
        f"data.val_batch_size={config.eval_batch_size}",
        f"actor_rollout_ref.model.path={policy}",
        "actor_rollout_ref.model.enable_gradient_checkpointing=false",
        f"actor_rollout_ref.actor.optim.lr={rl.lr}",
        # the demo's own schedule, not the recipe's: a constant rate, no entropy bonus, validation first
        "actor_rollout_ref.actor.optim.lr_warmup_steps_ratio=0",
        "critic.optim.lr_warmup_steps_ratio=0",
        "actor_rollout_ref.actor.entropy_coeff=0",
        "trainer.val_before_train=true",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={rl.batch_size}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={rollouts // workers}",
        f"actor_rollout_ref.rollout.n={rl.n}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={rollouts // workers}",
        f"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu={rollouts // workers}",
        "search.mode=simulate_sft",
        "search.engine=corpus",
        "search.simulator.in_process=true",
        f"search.simulator.model={simulator}",
        f"search.simulator.max_tokens={config.simulator.max_tokens}",
        "search.simulator.temperature=0",
        "search.cache=memory",
        f"search.curriculum.start_threshold={rl.start_threshold}",
        f"search.curriculum.end_threshold={rl.end_threshold}",
        f"trainer.n_gpus_per_node={workers}",
        f"trainer.total_training_steps={rl.steps}",
        f"trainer.test_freq={rl.test_freq}",
        f"trainer.save_freq={rl.steps}",
        "trainer.logger=[file]",
        f"trainer.default_local_dir={run_dir}",
        f"trainer.experiment_name=demo_{rl.recipe}",
        *search_overrides(config, data),
        *rl.overrides,
    ]
    if config.critictor.enable:
        overrides.append(f"trainer.rollout_data_dir={os.path.join(run_dir, 'rollouts')}")
    trainer = train(load_train_config(rl.recipe, [*overrides, *extra]))
    trainer.shutdown()
    return resolve_model_path(run_dir)


def assess(config: DemoConfig, model: str, data: dict, out_dir: str) -> dict[str, float]:
    """Held-out EM, F1, searches and answer rate with the corpus engine, and EM closed-book (every
    search returns no documents): the gap between the two is what reading the documents adds."""
    table = evaluate(
        model, [data["test"]], "corpus", out_dir, search_overrides(config, data), batch_size=config.eval_batch_size
    )
    closed = evaluate(
        model,
        [data["test"]],
        CLOSED_BOOK,
        os.path.join(out_dir, "closed_book"),
        search_overrides(config, data),
        batch_size=config.eval_batch_size,
    )
    overall = table["all"]
    return {
        "em": overall["em"],
        "f1": overall["f1"],
        "searches_per_question": overall["searches"],
        "useless_per_question": overall["useless"],
        "answer_rate": overall["answered"],
        "closed_book_em": closed["all"]["em"],
    }


def tune_critic(
    config: DemoConfig, world: synthetic.World, init: str, rl_dir: str, out: str, held_out: Sequence[str]
) -> tuple[str, dict]:
    """Tunes the critic on the path judge's verdicts about the first ``critictor.from_steps`` steps'
    rollouts of the run in ``rl_dir`` (training questions only), then measures its agreement with
    the path judge on the held-out questions' evaluation trajectories in the ``held_out`` folders.
    Returns its folder and that agreement."""
    train_questions = {q.question: (q.answer, q.supporting()) for q in world.train_questions}
    seen = [
        trajectory
        for step in range(1, config.critictor.from_steps + 1)
        for trajectory in read_trajectories(os.path.join(rl_dir, "rollouts", f"{step}.jsonl"), train_questions)
    ]
    rows = tuning_rows(seen, contrast=config.critictor.contrast, seed=world.seed)
    path = os.path.join(out, "data", "critic_tuning.parquet")
    pd.DataFrame(rows, columns=["prompt", "response"]).to_parquet(path, index=False)
    print(f"critic tuning: {len(rows)} rows from the {len(seen)} rollouts of steps 1-{config.critictor.from_steps}")
    critic = tune(config, config.critictor, init, path, os.path.join(out, "critic"), "demo_critic")
    trajectories = [t for folder in held_out for t in read_trajectories(os.path.join(folder, "trajectories.jsonl"))]
    llm = LocalChatLLM(critic)
    agreement = judge_agreement(LLMCritic(llm, config.critictor.max_tokens, 0.0, 1, style="sft"), trajectories)

    def share(key: str) -> str:  # None where the held-out trajectories made no search
        return "n/a" if agreement[key] is None else f"{agreement[key]:.2f}"

    print(
        f"tuned critic against the path judge on {agreement['turns']} held-out searches: agreement "
        f"{share('agreement')} (always the majority: {share('majority_baseline')}), kappa {share('kappa')}; "
        f"the answer judge agrees with the path judge on {share('answer_judge_agreement')}"
    )
    return critic, agreement


def steps_to_target(run_dir: str, target: float) -> int | None:
    """The first validation step whose held-out EM reaches ``target``; None if none does."""
    return next(
        (step for step, em in read_metrics(os.path.join(run_dir, "metrics.jsonl"))["val/em"] if em >= target), None
    )


def compare_runs(config: DemoConfig, runs: dict[str, tuple[str, dict]], agreement: dict | None) -> dict:
    """``runs``: "without"/"with" -> (run folder, held-out metrics after RL); ``agreement``: a
    tuned critic's agreement with the path judge (None for the path judge itself)."""
    final = read_metrics(os.path.join(runs["without"][0], "metrics.jsonl"))["val/em"][-1][1]
    target = config.critictor.target * final
    keys = ("em", "f1", "searches_per_question", "useless_per_question", "answer_rate")
    sides = {
        name: {k: after[k] for k in keys} | {"steps_to_target": steps_to_target(run_dir, target)}
        for name, (run_dir, after) in runs.items()
    }
    return {"judge": config.critictor.judge, "agreement": agreement, "target_em": target, **sides}


def critic_table(critic: dict) -> str:
    lines = [
        "| RL run | EM | F1 | searches / question | useless / question | answer rate | steps to target EM |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("without", "with"):
        m = critic[name]
        label = "without the critic" if name == "without" else f"with the critic ({critic['judge']})"
        lines.append(
            f"| {label} | {m['em']:.3f} | {m['f1']:.3f} | {m['searches_per_question']:.2f} | "
            f"{m['useless_per_question']:.2f} | {m['answer_rate']:.3f} | {m['steps_to_target']} |"
        )
    return "\n".join(lines)


def to_table(before: dict, after: dict) -> str:
    lines = [
        "| policy | EM | closed-book EM | F1 | searches / question | answer rate |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, m in (("warm start", before), ("after RL", after)):
        lines.append(
            f"| {name} | {m['em']:.3f} | {m['closed_book_em']:.3f} | {m['f1']:.3f} | "
            f"{m['searches_per_question']:.2f} | {m['answer_rate']:.3f} |"
        )
    return "\n".join(lines)


@dataclass
class Setup:
    """What every RL run of one seed starts from."""

    world: synthetic.World
    data: dict[str, Any]  # train, test, corpus paths and the prompt length
    initial: dict[str, str]  # the untrained simulator, policy and critic
    simulator: str  # the tuned simulator
    simulator_rates: dict[str, float]
    policy: str  # the warm-started policy


def prepare(config: DemoConfig, out: str, phase: Callable[[str], None]) -> Setup:
    """The world, its files and tokenizer, the tuned simulator and the warm-started policy."""
    phase("world")
    w = config.world
    world = synthetic.build_world(
        w.seed,
        n_people=w.people,
        n_orgs=w.orgs,
        n_cities=w.cities,
        n_countries=w.countries,
        test_fraction=w.test_fraction,
    )
    data: dict[str, Any] = dict(
        synthetic.write_world(world, os.path.join(out, "data"), instruction=instruction(config))
    )
    pairs_path = synthetic_tuning.write_simulation_pairs(
        simulation_rows(config, world), os.path.join(out, "data", "simulation_pairs.parquet")
    )
    warm_path = synthetic_tuning.write_warm_start(
        warm_start_rows(config, world), os.path.join(out, "data", "warm_start.parquet")
    )
    initial = build_models(config, world, out)
    data["prompt_length"] = prompt_length(initial["policy"], [data["train"], data["test"]])

    phase("simulation tuning")
    simulator = tune(
        config, config.simulator, initial["simulator"], pairs_path, os.path.join(out, "simulator"), "demo_simulator"
    )
    rates = simulator_answer_rates(simulator, world, config)
    print(
        f"tuned simulator states the gold answer in {rates['useful_answer_rate']:.0%} of useful "
        f"and {rates['noisy_answer_rate']:.0%} of noisy replies (held-out requests)"
    )
    phase("warm start")
    policy = tune(
        config, config.warm_start, initial["policy"], warm_path, os.path.join(out, "warm_start"), "demo_warm_start"
    )
    return Setup(world, data, initial, simulator, rates, policy)


def run_demo(config: DemoConfig) -> dict:
    start = time.time()
    out = os.path.abspath(os.path.expanduser(config.out_dir))
    os.makedirs(out, exist_ok=True)
    seconds: dict[str, float] = {}

    def phase(name: str) -> None:
        print(f"\n== {name} ==", flush=True)
        seconds[name] = time.time()

    setup = prepare(config, out, phase)
    policy, simulator, data = setup.policy, setup.simulator, setup.data
    phase("evaluation before RL")
    before = assess(config, policy, data, os.path.join(out, "eval_before"))

    phase("RL")
    rl_dir = os.path.join(out, "rl")
    trained = reinforce(config, policy, simulator, data, rl_dir)
    phase("evaluation after RL")
    after = assess(config, trained, data, os.path.join(out, "eval_after"))
    plots = plot_run(rl_dir, os.path.join(out, "plots"))
    models = {"simulator": simulator, "warm_start": policy, "rl": trained}
    comparison = None
    if config.critictor.enable:
        critic, agreement = config.critictor.judge, None
        if critic == "llm":
            phase("critic tuning")
            held_out = [os.path.join(out, name) for name in ("eval_before", "eval_after")]
            critic, agreement = tune_critic(config, setup.world, setup.initial["critic"], rl_dir, out, held_out)
            models["critic"] = critic
        phase("RL with the critic")
        critic_dir = os.path.join(out, "rl_critic")
        models["rl_critic"] = reinforce(config, policy, simulator, data, critic_dir, turn_rewards(config, critic))
        phase("evaluation after RL with the critic")
        after_critic = assess(config, models["rl_critic"], data, os.path.join(out, "eval_after_critic"))
        comparison = compare_runs(config, {"without": (rl_dir, after), "with": (critic_dir, after_critic)}, agreement)
        plots.append(
            plot_runs(
                {"without the critic": rl_dir, f"with the critic ({config.critictor.judge})": critic_dir},
                "val/em",
                os.path.join(out, "plots", "critic_em.png"),
                "Held-out exact match, RL without and with the critic",
            )
        )

    ends = list(seconds.values())[1:] + [time.time()]
    total = time.time() - start
    summary = {
        "before": before,
        "after": after,
        "seconds": total,
        "simulator": setup.simulator_rates,
        "phase_seconds": {name: end - begin for (name, begin), end in zip(seconds.items(), ends, strict=True)},
        "models": models,
        "plots": plots,
        "config": OmegaConf.to_container(OmegaConf.structured(config)),
    }
    if comparison is not None:
        summary["critic"] = comparison
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    tables = to_table(before, after)
    if comparison is not None:
        tables += f"\n\n{critic_table(comparison)}\n(target EM {comparison['target_em']:.3f})"
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(tables + "\n")
    print(f"\n{tables}\n\ntook {total / 60:.1f} min; tables (summary.md), summary.json, plots and checkpoints in {out}")
    return summary


def load_config(overrides: list[str] | None = None) -> DemoConfig:
    """``configs/demo.yaml`` after Hydra overrides, typed."""
    return load_train_config("demo", overrides, DemoConfig)


def main(argv: list[str] | None = None) -> None:
    # Not @hydra.main: each phase composes its own trainer config with Hydra.
    overrides = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help") for arg in overrides):
        print(__doc__)
        return
    config = load_config(overrides)
    try:
        run_demo(config)
    finally:
        if ray.is_initialized():
            ray.shutdown()


if __name__ == "__main__":
    main()
