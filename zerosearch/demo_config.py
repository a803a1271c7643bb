"""Typed configuration of the CPU demonstration (``python -m zerosearch.demo``; configs/demo.yaml
is written from these by ``make configs``). Each leaf carries its help, rendered into README's
table of demo settings."""

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

from verl.algos.core_algos import TURN_REWARD_NORMS
from verl.utils.config import ConfigSection, option
from zerosearch.config import RECIPES
from zerosearch.prompts import POLICY_INSTRUCTIONS


@dataclass
class DemoWorldConfig(ConfigSection):
    seed: int = option(0, "Seed of names and facts.")
    people: int = option(60, "People in the invented world.", min=2)
    orgs: int = option(30, "Organisations in the invented world.", min=2)
    cities: int = option(15, "Cities in the invented world.", min=2)
    countries: int = option(5, "Countries; cities lie in them, they have no documents.", min=1)
    test_fraction: float = option(0.2, "Share of each kind of entity whose questions are held out.", min=0)
    vocab_size: int = option(1000, "Size of the BPE tokenizer both models share, trained on the world's texts.", min=1)


@dataclass
class DemoModelConfig(ConfigSection):
    """A randomly initialised Qwen2-architecture causal LM."""

    hidden_size: int = option(128, "Hidden size of the Qwen2-architecture model.", min=1)
    intermediate_size: int = option(256, "Intermediate (MLP) size.", min=1)
    num_layers: int = option(4, "Transformer blocks (layers).", min=1)
    num_heads: int = option(4, "Attention heads per layer.", min=1)
    num_kv_heads: int = option(2, "Key/value heads per layer (grouped-query attention).", min=1)
    tie_word_embeddings: bool = option(True, "Share the input and output embeddings.")
    seed: int = option(0, "Seed of the random weights.")


@dataclass
class DemoSFTPhaseConfig(ConfigSection):
    model: DemoModelConfig = field(default_factory=DemoModelConfig)
    steps: int = option(300, "Optimizer steps of main_sft in this phase.", min=1)
    batch_size: int = option(16, "Training rows per optimizer step.", min=1)
    lr: float = option(3e-3, "Peak learning rate (cosine schedule).", min=0)
    overrides: list[str] = option([], "Further main_sft overrides, key=value.")


@dataclass
class DemoSimulatorConfig(DemoSFTPhaseConfig):
    pairs: int = option(4000, "(query, useful|noisy) -> documents tuning pairs.", min=1)
    redrawn_worlds: int = option(
        3,
        "Practice copies of the world with redrawn facts that the pairs are spread over, so the simulator "
        "writes the answer it is given rather than one it remembers.",
        min=0,
    )
    eval_pairs: int = option(100, "Held-out requests on which the useful and noisy answer rates are measured.", min=2)
    max_tokens: int = option(40, "New tokens per simulated search: one document at topk=1.", min=1)


@dataclass
class DemoWarmStartConfig(DemoSFTPhaseConfig):
    search_rate: float = option(0.3, "Share of warm-start trajectories that search; the rest guess.", min=0)
    search_practice: int = option(
        4,
        "Further passes, every question searched but the decision untrained, each on a practice world "
        "with redrawn facts: the answer must be read off the documents.",
        min=0,
    )
    useless_rate: float = option(
        0.4,
        "Chance that a searching warm-start trajectory makes one useless search (the previous query again, "
        "or one off the gold path): the waste a turn reward has to remove (about 20% of the searches).",
        min=0,
    )


@dataclass
class DemoRLConfig(ConfigSection):
    recipe: str = option("zerosearch_grpo", "A recipe under configs/.", choices=RECIPES)
    steps: int = option(30, "RL training steps.", min=1)
    batch_size: int = option(16, "Questions per step.", min=1)
    n: int = option(5, "Rollouts per question.", min=1)
    lr: float = option(2e-4, "Actor learning rate.", min=0)
    max_response_length: int = option(40, "New tokens per turn.", min=1)
    max_obs_length: int = option(64, "Tokens per observation.", min=1)
    start_threshold: float = option(0.0, "Noise probability of the simulated search at the first step.", min=0)
    end_threshold: float = option(0.3, "Noise probability at the last step.", min=0)
    test_freq: int = option(
        1, "Validation on the corpus engine every this many steps; every step, so steps_to_target is exact.", min=1
    )
    rollout: str = option(
        "hf",
        "Rollout engine of RL and evaluation: hf, or vllm (needs vLLM's CPU build; its turns are then scheduled per "
        "trajectory, actor_rollout_ref.rollout.agent.scheduling=async).",
        choices=("hf", "vllm"),
    )
    overrides: list[str] = option([], "Further zerosearch.train overrides, key=value.")


@dataclass
class DemoCritictorConfig(DemoSFTPhaseConfig):
    enable: bool = option(
        True,
        "Run RL a second time from the same warm start with the critic's turn rewards, and compare the two.",
    )
    judge: str = option(
        "path",
        "The critic of the second run: path (the rule path judge, the ideal critic) or llm (a tiny critic LLM "
        "tuned on the path judge's verdicts about the first run's early rollouts).",
        choices=("path", "llm"),
    )
    from_steps: int = option(
        10,
        "judge=llm: the first RL run's steps whose rollouts (training questions only; step 1 is the "
        "warm-start policy's) are labelled by the path judge to tune the critic.",
        min=1,
    )
    contrast: bool = option(
        True,
        "judge=llm: each tuning trajectory also comes with the gold answer and path of two other training "
        "trajectories: one whose facts its documents state and one whose facts they do not, labelled again.",
    )
    turn_reward_coef: float = option(0.1, "critictor.turn_reward_coef of the second run.", min=0)
    penalize_useless: bool = option(True, "critictor.retrospective.penalize_useless of the second run.")
    turn_reward_norm: str = option("none", "critictor.turn_reward_norm of the second run.", choices=TURN_REWARD_NORMS)
    max_tokens: int = option(32, "New tokens of one grading reply: a line per search.", min=1)
    target: float = option(
        0.9, "steps_to_target: the first step whose held-out EM reaches this share of the first run's final EM.", min=0
    )


@dataclass
class DemoConfig(ConfigSection):
    out_dir: str = option("runs/demo", "Everything goes here; a second run into it resumes finished phases.")
    workers: int = option(2, "Training processes (trainer.n_gpus_per_node).", min=1)
    topk: int = option(1, "Documents per search, simulated and real.", min=1)
    policy_instruction: str = option(
        "brief", "The prompt's instruction: brief (the tags only) or full.", choices=tuple(POLICY_INSTRUCTIONS)
    )
    max_turns: int = option(4, "Searches per question: three-hop questions need three, and one is spare.", min=1)
    eval_batch_size: int = option(64, "Questions per evaluation batch.", min=1)
    world: DemoWorldConfig = field(default_factory=DemoWorldConfig)
    simulator: DemoSimulatorConfig = field(
        default_factory=lambda: DemoSimulatorConfig(model=DemoModelConfig(seed=1), steps=1200, lr=3e-3)
    )
    warm_start: DemoWarmStartConfig = field(default_factory=lambda: DemoWarmStartConfig(steps=1000))
    rl: DemoRLConfig = field(default_factory=DemoRLConfig)
    critictor: DemoCritictorConfig = field(
        default_factory=lambda: DemoCritictorConfig(model=DemoModelConfig(seed=2), steps=300, lr=3e-3)
    )


def register_demo_schema() -> None:
    ConfigStore.instance().store(name="demo_schema", node=DemoConfig)
