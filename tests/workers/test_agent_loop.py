"""The engine's multi-turn agent loop with a scripted policy and small environments: both schedules
give the same trajectories, ``async`` has no turn barrier and bounds its steps in flight, and every
generation call keeps each row in its place."""

import threading
import time

import pytest
import torch

from verl.protocol import DataProto, RolloutSettings
from verl.utils.batch_schema import Key
from verl.workers.rollout.agent_loop import AgentEnv, AgentLoop, Observation, Step, Turn

STOP = ["</calc>", "</answer>"]


class CharTokenizer:
    """One token per character (ids are code points); pad 0."""

    pad_token_id = 0

    def encode(self, text, add_special_tokens=False, split_special_tokens=True):
        return [ord(c) for c in text]

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids)


class ScriptedPolicy:
    """Each row writes its script's next turn: the turn is chosen by how many results the row's
    context already holds. Records the rows each call carried and which of them were sent empty."""

    def __init__(self, scripts, width=40):
        self.scripts, self.width = scripts, width
        self.calls: list[list[int]] = []
        self.lock = threading.Lock()

    def __call__(self, request: DataProto) -> DataProto:
        settings = RolloutSettings.of(request)
        assert settings.n == 1 and settings.stop == STOP
        masks = request.batch[Key.ATTENTION_MASK].bool()
        rows = []
        for ids, mask in zip(request.batch[Key.INPUT_IDS], masks, strict=True):
            context = "".join(chr(i) for i in ids[mask].tolist())
            if not context:
                rows.append([])
                continue
            script = self.scripts[int(context.split("|")[0])]
            turn = context.count("<result>") + context.count("\nwrite")  # observations so far
            rows.append([ord(c) for c in script[min(turn, len(script) - 1)]][: settings.max_new_tokens])
        with self.lock:
            self.calls.append([i for i, r in enumerate(rows) if r])
        width = settings.max_new_tokens
        responses = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            responses[i, : len(r)], mask[i, : len(r)] = torch.tensor(r, dtype=torch.long), 1
        return DataProto.from_dict(
            tensors={
                Key.RESPONSES: responses,
                Key.RESPONSE_MASK: mask,
                Key.ROLLOUT_LOG_PROBS: -responses.float() / 1000,
            }
        )


class CalcEnv(AgentEnv):
    """The README's example: ``<calc>2+3</calc>`` is answered with ``<result>5</result>``; an
    ``<answer>`` ends the trajectory. ``delay`` seconds are spent on each calculation."""

    def __init__(self, delay: float = 0.0):
        self.delay, self.turns, self.answer = delay, [], None

    def step(self, turn: Turn) -> Step:
        self.turns.append(turn)
        if "<answer>" in turn.text:
            self.answer = turn.text.split("<answer>")[1].split("</answer>")[0]
            return Step(done=True)
        if turn.final:  # nothing more is appended: no need to calculate
            return Step(done=True)
        if "<calc>" not in turn.text:
            return Step([Observation("\nwrite <calc>...</calc> or <answer>...</answer>\n")])
        time.sleep(self.delay)
        a, b = turn.text.split("<calc>")[1].split("</calc>")[0].split("+")
        return Step([Observation(str(int(a) + int(b)), "<result>", "</result>")])


SCRIPTS = [
    ["<calc>1+2</calc>", "<calc>3+4</calc>", "<answer>7</answer>"],
    ["<answer>0</answer>"],
    ["no action", "<calc>10+20</calc>", "<answer>30</answer>"],
    ["<calc>5+5</calc>", "<calc>1+1</calc>", "<calc>2+2</calc>", "<calc>3+3</calc>"],
]


def run(scheduling, envs, scripts=SCRIPTS, max_turns=3, max_obs_length=30, budget=200, concurrent=8, window=0.05):
    policy = ScriptedPolicy(scripts)
    loop = AgentLoop(
        policy,
        CharTokenizer(),
        stop=STOP,
        turn_tokens=40,
        response_budget=budget,
        max_obs_length=max_obs_length,
        max_turns=max_turns,
        scheduling=scheduling,
        max_concurrent_searches=concurrent,
        gather_window_s=window,
    )
    prompts = [[ord(c) for c in f"{i}|question:"] for i in range(len(envs))]
    return loop.run(prompts, envs, RolloutSettings()), policy


def text(ids):
    return "".join(chr(i) for i in ids)


def test_a_trajectory_interleaves_turns_and_observations_with_masks_and_log_probs():
    envs = [CalcEnv() for _ in SCRIPTS]
    result, _ = run("batch", envs)
    first = result.rows[0]
    assert (
        text(first.response) == "<calc>1+2</calc><result>3</result><calc>3+4</calc><result>7</result><answer>7</answer>"
    )
    sampled = [chr(i) for i, m in zip(first.response, first.mask, strict=True) if m]
    assert "".join(sampled) == "<calc>1+2</calc><calc>3+4</calc><answer>7</answer>"
    expected = [-i / 1000 if m else 0.0 for i, m in zip(first.response, first.mask, strict=True)]
    assert first.log_probs == pytest.approx(expected)
    assert [r.turns for r in result.rows] == [3, 1, 3, 4]
    assert envs[0].answer == "7" and envs[1].answer == "0" and envs[2].answer == "30" and envs[3].answer is None
    # the last turn is read but not answered: no observation after row 3's fourth calc
    assert text(result.rows[3].response).endswith("<result>4</result><calc>3+3</calc>")
    assert envs[3].turns[-1].final and not envs[3].turns[0].final
    assert result.metrics["rollout/turns_max"] == 4 and result.metrics["rollout/turns_frac_1"] == 0.25


@pytest.mark.parametrize("budget,max_obs", [(200, 30), (200, 12), (45, 30), (40, 30)])
def test_batch_and_async_give_the_same_trajectories(budget, max_obs):
    batch, _ = run("batch", [CalcEnv() for _ in SCRIPTS], budget=budget, max_obs_length=max_obs)
    envs = [CalcEnv(delay=0.01 * (3 - i)) for i in range(len(SCRIPTS))]  # finishing out of order
    asynchronous, _ = run("async", envs, budget=budget, max_obs_length=max_obs)
    for a, b in zip(batch.rows, asynchronous.rows, strict=True):
        assert (a.response, a.mask, a.log_probs, a.turns) == (b.response, b.mask, b.log_probs, b.turns)
        assert (a.out_of_budget, a.truncated_observations) == (b.out_of_budget, b.truncated_observations)


def test_a_cut_framed_observation_stays_closed_and_the_budget_ends_a_trajectory():
    result, _ = run("batch", [CalcEnv()], scripts=[["<calc>1000+2000</calc>", "<answer>x</answer>"]], max_obs_length=18)
    assert text(result.rows[0].response) == "<calc>1000+2000</calc><result>3</result><answer>x</answer>"
    assert result.rows[0].truncated_observations == 1
    result, _ = run("batch", [CalcEnv()], scripts=[["<calc>1+2</calc>", "<answer>x</answer>"]], budget=20)
    row = result.rows[0]
    assert len(row.response) == 20 and row.out_of_budget and row.done and row.turns == 1


def test_room_after_tells_an_environment_what_its_observations_leave():
    seen = []

    class Probe(CalcEnv):
        def step(self, turn):
            step = super().step(turn)
            seen.append((turn.end, turn.room_after(step.observations), turn.room_after([])))
            return step

    run("batch", [Probe()], scripts=[["<calc>1+2</calc>", "<answer>3</answer>"]], budget=100)
    assert seen[0] == (16, 100 - 16 - len("<result>3</result>"), 100 - 16)


def test_async_has_no_turn_barrier():
    """Row 0's first calculation waits until row 1 has finished all its turns: under lockstep turns
    row 1 could never get past its first one, so the loop would stall."""
    finished = threading.Event()

    class Waits(CalcEnv):
        def step(self, turn):
            assert finished.wait(timeout=30), "row 1 did not finish while row 0 was waiting"
            return super().step(turn)

    class Signals(CalcEnv):
        def step(self, turn):
            step = super().step(turn)
            if step.done:
                finished.set()
            return step

    scripts = [SCRIPTS[0], ["<calc>1+1</calc>", "<calc>2+2</calc>", "<answer>4</answer>"]]
    result, policy = run("async", [Waits(), Signals()], scripts=scripts)
    assert [r.turns for r in result.rows] == [3, 3]
    # row 1's second and third turns were generated without row 0
    assert policy.calls[:3] == [[0, 1], [1], [1]]
    assert result.metrics["rollout/turn_wait_s"] > 0


def test_async_generates_together_the_turns_of_steps_that_end_together():
    """Quick steps: the free engine waits for every stepping trajectory, so the calls are the
    lockstep ones; with no window each call takes whatever has queued by then."""
    lockstep = run("batch", [CalcEnv() for _ in SCRIPTS])[1].calls
    assert run("async", [CalcEnv() for _ in SCRIPTS], window=30.0)[1].calls == lockstep
    assert lockstep == [[0, 1, 2, 3], [0, 2, 3], [0, 2, 3], [3]]


def test_async_bounds_the_steps_in_flight():
    in_flight, peak, lock = [0], [0], threading.Lock()

    class Counted(CalcEnv):
        def step(self, turn):
            with lock:
                in_flight[0] += 1
                peak[0] = max(peak[0], in_flight[0])
            time.sleep(0.2)
            with lock:
                in_flight[0] -= 1
            return super().step(turn)

    scripts = [["<calc>1+1</calc>", "<answer>2</answer>"]] * 8
    result, _ = run("async", [Counted() for _ in scripts], scripts=scripts, concurrent=3)
    assert peak[0] == 3 and all(r.turns == 2 for r in result.rows)


def test_every_call_keeps_each_row_in_its_place():
    """A row is generated for only at its own index; the others are sent empty."""
    envs = [CalcEnv(delay=0.005 * i) for i in range(len(SCRIPTS))]
    policy_calls = run("async", envs)[1].calls
    assert policy_calls[0] == [0, 1, 2, 3]
    generated = sorted(i for call in policy_calls for i in call)
    assert generated == [0, 0, 0, 1, 2, 2, 2, 3, 3, 3, 3]


def test_a_failed_generation_or_step_surfaces_in_both_schedules():
    class Broken(CalcEnv):
        def step(self, turn):
            raise RuntimeError("calculator on fire")

    for scheduling in ("batch", "async"):
        with pytest.raises(RuntimeError, match="calculator on fire"):
            run(scheduling, [CalcEnv(), Broken()], scripts=[SCRIPTS[0], SCRIPTS[0]])

    def failing(request):
        raise ConnectionError("worker lost")

    for scheduling in ("batch", "async"):
        loop = AgentLoop(failing, CharTokenizer(), STOP, 10, 100, 10, 2, scheduling=scheduling)
        with pytest.raises(ConnectionError, match="worker lost"):
            loop.run([[49]], [CalcEnv()], RolloutSettings())


def test_an_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="scheduling='eager'"):
        AgentLoop(lambda r: r, CharTokenizer(), STOP, 10, 100, 10, 2, scheduling="eager")


def test_after_a_failure_under_async_nothing_of_the_run_goes_on():
    """The step under way when another trajectory fails is waited for, and no later turn starts."""
    finished = []

    class Slow(CalcEnv):
        def step(self, turn):
            time.sleep(0.3)
            finished.append(turn.index)
            return super().step(turn)

    class Broken(CalcEnv):
        def step(self, turn):
            raise RuntimeError("calculator on fire")

    with pytest.raises(RuntimeError, match="calculator on fire"):
        run("async", [Slow(), Broken()], scripts=[SCRIPTS[0], SCRIPTS[0]])
    assert finished == [0]
    time.sleep(0.5)
    assert finished == [0]


def test_async_runs_from_code_that_already_runs_an_event_loop():
    import asyncio

    async def notebook_cell():
        return run("async", [CalcEnv() for _ in SCRIPTS])[0]

    result = asyncio.run(notebook_cell())
    assert [r.turns for r in result.rows] == [3, 1, 3, 4]


class RowCalcEnv(CalcEnv):
    """CalcEnv as the trainer's agent manager builds it: from its data row, with an outcome."""

    stop = tuple(STOP)

    def reset(self, row):
        self.row = row

    def outcome(self):
        return {"accepted_answer": self.answer, "sample": self.row["sample"]}


def test_an_environment_chosen_by_config_runs_in_the_trainers_agent_manager():
    from verl.config import PPOConfig
    from verl.utils.import_utils import load_object
    from verl.utils.torch_functional import left_pad, position_ids

    config = PPOConfig()
    config.data.max_response_length = 40
    rollout = config.actor_rollout_ref.rollout
    rollout.agent.env, rollout.agent.max_turns, rollout.agent.max_obs_length = f"{__name__}:RowCalcEnv", 3, 30
    rollout.n = 2
    assert config.response_width() == 4 * 40 + 3 * 30  # every turn and observation
    manager_class = load_object(rollout.manager(), "generation_manager")
    policy = ScriptedPolicy(SCRIPTS[:2])
    worker_group = type("WorkerGroup", (), {"generate_sequences": staticmethod(policy)})()
    manager = manager_class(config, worker_group, CharTokenizer())
    prompts = [[ord(c) for c in f"{i}|question:"] for i in range(2)]
    ids, mask = left_pad(prompts, 0)
    batch = DataProto.from_dict(
        tensors={Key.INPUT_IDS: ids, Key.ATTENTION_MASK: mask, Key.POSITION_IDS: position_ids(mask)},
        non_tensors={"data_source": ["calc", "calc"]},
        meta_info={"rollout": RolloutSettings()},
    )
    out = manager.generate_sequences(batch)
    assert out.batch[Key.RESPONSES].shape == (4, 4 * 40 + 3 * 30)
    assert list(out.non_tensor_batch["accepted_answer"]) == ["7", "7", "0", "0"]
    assert list(out.non_tensor_batch["sample"]) == [0, 1, 0, 1]
    assert list(out.non_tensor_batch["num_turns"]) == [3, 3, 1, 1]
    assert list(out.non_tensor_batch["data_source"]) == ["calc"] * 4
    first = out.batch[Key.RESPONSES][0][out.batch[Key.RESPONSE_MASK][0].bool()].tolist()
    assert text(first) == "<calc>1+2</calc><calc>3+4</calc><answer>7</answer>"  # observations masked out
    assert out.meta_info["metrics"]["rollout/turns_max"] == 3


def test_a_search_environment_needs_the_search_agents_manager():
    from verl.config import PPOConfig
    from verl.workers.rollout.agent_manager import AgentGenerationManager

    config = PPOConfig()
    config.actor_rollout_ref.rollout.agent.env = "zerosearch.env:SearchEnv"
    worker_group = type("WorkerGroup", (), {"generate_sequences": staticmethod(ScriptedPolicy(SCRIPTS))})()
    manager = AgentGenerationManager(config, worker_group, CharTokenizer())
    with pytest.raises(ValueError, match="generation_manager=zerosearch.generation:SearchGenerationManager"):
        manager.env_class.for_rows(config, [{}], RolloutSettings())
    config.actor_rollout_ref.rollout.agent.env = "verl.protocol:DataProto"
    with pytest.raises(ValueError, match="not an AgentEnv"):
        AgentGenerationManager(config, worker_group, CharTokenizer())
