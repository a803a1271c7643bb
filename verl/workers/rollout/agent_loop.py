"""A multi-turn agent loop at the token level, for any tool environment.

The loop asks the rollout for one turn per trajectory (stopping at the environment's stop
strings), hands the turn's text to that trajectory's environment (``AgentEnv``) and appends what
comes back as observation tokens (mask 0, log-prob 0). Sampled tokens keep the rollout's ids and
log-probs exactly. A trajectory ends on its environment's ``done``, after ``max_turns`` environment
steps (the last turn is read but nothing more is appended), or when its response budget is full.

Two schedules (``actor_rollout_ref.rollout.agent.scheduling``):

- ``batch``: lockstep turns. Every active trajectory generates, then every environment steps in one
  ``step_batch`` call (a backend can batch its requests), then the next turn starts.
- ``async``: each trajectory is an asyncio task. Its environment step runs on a thread as soon as
  its own turn is sampled (at most ``max_concurrent_searches`` at once) and its next turn is queued
  as soon as its own observation is back; whenever the engine is free it is sent every queued turn.
  A slow step holds its own trajectory only.

Either way a generation call carries every row in its place, rows with nothing to generate sent
empty, so a row stays on the rollout worker whose engine holds its context's KV cache.
"""

import asyncio
import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import torch

from verl.protocol import DataProto, RolloutSettings
from verl.utils.batch_schema import Key
from verl.utils.torch_functional import left_pad, position_ids

SCHEDULES = ("batch", "async")
E = TypeVar("E", bound="AgentEnv")


@dataclass(frozen=True)
class Observation:
    """Text an environment answers a turn with. When it does not fit the room left, the body is
    cut and ``opening``/``closing`` are kept, so a framed block stays closed; an observation
    without a frame is cut at its end."""

    body: str
    opening: str = ""
    closing: str = ""
    # The frame is the chat template's own text (a tool-response turn): its special tokens are
    # tokens. The body is always plain text, whatever it spells.
    frame_tokens: bool = False

    def text(self) -> str:
        return self.opening + self.body + self.closing


@dataclass
class Step:
    observations: list[Observation] = field(default_factory=list)
    done: bool = False  # the trajectory ends here (its observations are still appended)


@dataclass
class Turn:
    """One sampled turn as its environment sees it."""

    index: int  # 0 for the first turn
    text: str  # decoded without special tokens
    start: int  # the turn's sampled tokens are response[start:end]
    end: int
    final: bool  # the trajectory ends after this turn whatever the environment answers
    room_after: Callable[[Sequence[Observation]], int]  # response tokens left once these are appended


class AgentEnv:
    """One trajectory's environment. Implement ``step``; an environment whose backend serves
    requests in batches overrides ``step_batch``, which the loop always calls: with every
    trajectory stepping this turn under ``batch``, with one trajectory under ``async``.

    Chosen by config (``actor_rollout_ref.rollout.agent.env=module:Class``), the trainer's agent
    manager builds one per trajectory with ``for_rows``, ends each turn at ``stop``, and hands each
    trajectory's ``outcome`` to the reward as non-tensor columns."""

    stop: ClassVar[tuple[str, ...]] = ()  # strings that end a turn (kept in it)
    manager: ClassVar[str | None] = None  # module:Class of a generation manager it needs; None: the engine's

    @classmethod
    def stops(cls, config: Any) -> tuple[str, ...]:
        """The strings that end a turn under ``config``; by default ``stop``."""
        return cls.stop

    @classmethod
    def tools(cls, config: Any) -> list[dict[str, Any]]:
        """Function schemas the prompts declare through the chat template (none by default)."""
        return []

    @classmethod
    def for_rows(cls: type[E], config: Any, rows: Sequence[dict[str, Any]], settings: RolloutSettings) -> list[E]:
        """One environment per trajectory: ``rows`` are the data rows' columns (each prompt's row
        repeated once per sample, ``row["sample"]`` its index). By default ``cls()``, then ``reset``."""
        envs = [cls() for _ in rows]
        for env, row in zip(envs, rows, strict=True):
            env.reset(row)
        return envs

    def reset(self, row: dict[str, Any]) -> None:
        """Starts a trajectory on its data row."""

    def outcome(self) -> dict[str, Any]:
        """What the reward reads of the finished trajectory, one non-tensor column per key."""
        return {}

    def step(self, turn: Turn) -> Step:
        raise NotImplementedError(f"{type(self).__name__} implements neither step nor step_batch")

    @classmethod
    def step_batch(cls: type[E], envs: Sequence[E], turns: Sequence[Turn]) -> list[Step]:
        return [env.step(turn) for env, turn in zip(envs, turns, strict=True)]


def tool_response_frame(tokenizer: Any, tools: list[dict[str, Any]] | None = None) -> tuple[str, str]:
    """What the chat template writes around a tool's answer, after an assistant turn that called it:
    (the text from the end of that turn to the answer, the text after it up to the next assistant
    turn). For Qwen: ``<|im_end|>\\n<|im_start|>user\\n<tool_response>\\n`` and
    ``\\n</tool_response><|im_end|>\\n<|im_start|>assistant\\n``."""
    call, answer = "\x00CALL\x00", "\x00ANSWER\x00"
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": call},
        {"role": "tool", "content": answer},
    ]
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("tool calls need a tokenizer with a chat template")
    text = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False)
    if call not in text or answer not in text:
        raise ValueError("the tokenizer's chat template does not render a tool's answer after an assistant turn")
    after_call = text[text.index(call) + len(call) :]
    opening, _, closing = after_call.partition(answer)
    return opening, closing


@dataclass
class TrajectoryTokens:
    prompt: list[int]
    response: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)  # 1 on sampled tokens, 0 on observations
    log_probs: list[float] = field(default_factory=list)  # the rollout's, 0 on observations
    turns: int = 0
    done: bool = False
    out_of_budget: bool = False
    truncated_observations: int = 0
    step_wait_s: float = 0.0  # spent waiting for its environment's steps
    generate_s: float = 0.0  # spent in the generation calls that sampled its turns

    def append(self, ids: list[int], log_probs: list[float] | None = None) -> None:
        """Sampled tokens come with their log-probs; observation tokens (``log_probs`` None) get mask 0."""
        self.response.extend(ids)
        self.mask.extend([0 if log_probs is None else 1] * len(ids))
        self.log_probs.extend([0.0] * len(ids) if log_probs is None else log_probs)


@dataclass
class LoopResult:
    rows: list[TrajectoryTokens]
    has_log_probs: bool  # every turn came with the rollout's log-probs
    metrics: dict[str, float]


@dataclass
class _Run:
    """One ``run``'s state, so that nothing of it is kept on the loop between runs."""

    rows: list[TrajectoryTokens]
    settings: RolloutSettings
    has_log_probs: bool = True
    engine_s: float = 0.0  # time with a generation call running


class AgentLoop:
    """Runs environments against a rollout. ``generate`` is the workers' ``generate_sequences``."""

    def __init__(
        self,
        generate: Callable[[DataProto], DataProto],
        tokenizer: Any,
        stop: Sequence[str],
        turn_tokens: int,
        response_budget: int,
        max_obs_length: int,
        max_turns: int,
        scheduling: str = "batch",
        max_concurrent_searches: int = 64,
        gather_window_s: float = 0.05,
    ):
        if scheduling not in SCHEDULES:
            raise ValueError(f"actor_rollout_ref.rollout.agent.scheduling={scheduling!r}: choose one of {SCHEDULES}")
        self.generate = generate
        self.tokenizer = tokenizer
        self.stop = list(stop)
        self.turn_tokens = turn_tokens
        self.response_budget = response_budget
        self.max_obs_length = max_obs_length
        self.max_turns = max_turns
        self.scheduling = scheduling
        self.max_concurrent_searches = max_concurrent_searches
        self.gather_window_s = gather_window_s
        # environment steps measure their observations (room_after) on their own threads
        self._tokenizer_lock = threading.Lock()

    def run(self, prompts: list[list[int]], envs: Sequence[AgentEnv], settings: RolloutSettings) -> LoopResult:
        run = _Run([TrajectoryTokens(prompt=list(p)) for p in prompts], settings)
        started = time.perf_counter()
        if self.scheduling == "batch":
            self._run_batch(run, envs)
        else:
            _run_to_completion(self._run_async(run, envs))
        wall = time.perf_counter() - started
        return LoopResult(run.rows, run.has_log_probs, self._metrics(run, wall))

    # ---- the two schedules ------------------------------------------------------------------------
    def _run_batch(self, run: _Run, envs: Sequence[AgentEnv]) -> None:
        rows = run.rows
        for index in range(self.max_turns + 1):
            active = [i for i, row in enumerate(rows) if not row.done]
            if not active:
                return
            sampled = self._generate(run, active)
            turns = [self._take(rows[i], *sampled[i], index) for i in active]
            started = time.perf_counter()
            steps = self._step_batch([envs[i] for i in active], turns)
            waited = time.perf_counter() - started
            for i, turn, step in zip(active, turns, steps, strict=True):
                rows[i].step_wait_s += waited
                self._apply(rows[i], turn, step)

    async def _run_async(self, run: _Run, envs: Sequence[AgentEnv]) -> None:
        loop = asyncio.get_running_loop()
        steppers = ThreadPoolExecutor(self.max_concurrent_searches, thread_name_prefix="env-step")
        engine = _TurnQueue(self, run)

        async def trajectory(i: int) -> None:
            row, env = run.rows[i], envs[i]
            for index in range(self.max_turns + 1):
                turn = self._take(row, *await engine.generate(i), index)
                started = time.perf_counter()
                with engine.stepping():
                    (step,) = await loop.run_in_executor(steppers, self._step_batch, [env], [turn])
                row.step_wait_s += time.perf_counter() - started
                self._apply(row, turn, step)
                if row.done:
                    return

        tasks = [asyncio.create_task(trajectory(i)) for i in range(len(run.rows))]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            # One trajectory failed: the others stop, and nothing of this run goes on after it
            # returns (a step or a generation call already running is waited for, not abandoned).
            for task in [*tasks, engine.running]:
                if task is not None:
                    task.cancel()
            await asyncio.gather(*tasks, *([engine.running] if engine.running else []), return_exceptions=True)
            raise
        finally:
            await asyncio.to_thread(steppers.shutdown, wait=True, cancel_futures=True)
            await asyncio.to_thread(engine.thread.shutdown, wait=True, cancel_futures=True)

    # ---- one turn ---------------------------------------------------------------------------------
    def _generate(self, run: _Run, wanted: Sequence[int]) -> dict[int, tuple[list[int], list[float]]]:
        """One generation call for the ``wanted`` rows; the others are sent empty."""
        rows, settings = run.rows, run.settings
        chosen = set(wanted)
        contexts = [row.prompt + row.response if i in chosen else [] for i, row in enumerate(rows)]
        input_ids, attention_mask = left_pad(contexts, self.tokenizer.pad_token_id)
        request = DataProto.from_dict(
            tensors={
                Key.INPUT_IDS: input_ids,
                Key.ATTENTION_MASK: attention_mask,
                Key.POSITION_IDS: position_ids(attention_mask),
            },
            # One sample per row (the rows are already repeated), a turn's tokens, stop at an action.
            meta_info={
                "rollout": dataclasses.replace(settings, n=1, max_new_tokens=self.turn_tokens, stop=list(self.stop))
            },
        )
        started = time.perf_counter()
        out = self.generate(request)
        elapsed = time.perf_counter() - started
        run.engine_s += elapsed
        for i in wanted:
            rows[i].generate_s += elapsed
        if Key.ROLLOUT_LOG_PROBS not in out.batch.keys():
            run.has_log_probs = False
        responses, masks = out.batch[Key.RESPONSES], out.batch[Key.RESPONSE_MASK].bool()
        log_probs = out.batch[Key.ROLLOUT_LOG_PROBS] if run.has_log_probs else torch.zeros(responses.shape)
        return {i: (responses[i][masks[i]].tolist(), log_probs[i][masks[i]].tolist()) for i in wanted}

    def _take(self, row: TrajectoryTokens, ids: list[int], log_probs: list[float], index: int) -> Turn:
        """Appends a turn's sampled tokens (cut to the budget) and describes it for the environment."""
        room = self.response_budget - len(row.response)
        if len(ids) > room:
            ids, log_probs, row.out_of_budget = ids[:room], log_probs[:room], True
        start = len(row.response)
        row.append(ids, log_probs)
        row.turns += 1
        with self._tokenizer_lock:
            text = str(self.tokenizer.decode(ids, skip_special_tokens=True))
        final = row.out_of_budget or index == self.max_turns
        used = len(row.response)
        return Turn(index, text, start, used, final, lambda observations: self._room_after(used, observations))

    @staticmethod
    def _step_batch(envs: Sequence[AgentEnv], turns: Sequence[Turn]) -> list[Step]:
        """Each environment class's ``step_batch`` on its own environments, in their order."""
        steps: list[Step | None] = [None] * len(envs)
        for kind in dict.fromkeys(type(env) for env in envs):
            places = [i for i, env in enumerate(envs) if type(env) is kind]
            answered = kind.step_batch([envs[i] for i in places], [turns[i] for i in places])
            if len(answered) != len(places):
                raise ValueError(f"{kind.__name__}.step_batch returned {len(answered)} steps for {len(places)} turns")
            for i, step in zip(places, answered, strict=True):
                steps[i] = step
        return steps  # type: ignore[return-value]

    def _apply(self, row: TrajectoryTokens, turn: Turn, step: Step) -> None:
        if not turn.final:
            for observation in step.observations:
                ids, cut = self._observation_ids(observation, len(row.response))
                row.truncated_observations += cut
                row.append(ids)
                row.out_of_budget |= len(row.response) >= self.response_budget
        row.done = turn.final or step.done or row.out_of_budget

    # ---- observations -----------------------------------------------------------------------------
    def _encode(self, text: str) -> list[int]:
        """Observation text as plain tokens: a document that spells a special token (``<|im_end|>``)
        stays text and cannot forge a chat turn in the policy's context."""
        with self._tokenizer_lock:
            return self.tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)

    def _encode_frame(self, text: str) -> list[int]:
        """An environment's frame text, its special tokens as tokens."""
        with self._tokenizer_lock:
            return self.tokenizer.encode(text, add_special_tokens=False)

    def _observation_ids(self, observation: Observation, used: int) -> tuple[list[int], int]:
        """The tokens an observation adds to a response of ``used`` tokens, and how many cuts
        (0 to 2) were needed: the body to fit a framed block, then the block to the room left."""
        limit = max(min(self.max_obs_length, self.response_budget - used), 0)
        frame = self._encode_frame if observation.frame_tokens else self._encode
        if observation.frame_tokens:
            ids = frame(observation.opening) + self._encode(observation.body) + frame(observation.closing)
        else:
            ids = self._encode(observation.text())
        cuts = 0
        if len(ids) > limit and (observation.opening or observation.closing):
            opening, closing = frame(observation.opening), frame(observation.closing)
            room = limit - len(opening) - len(closing)
            if room > 0:
                ids, cuts = opening + self._encode(observation.body)[:room] + closing, 1
        if len(ids) > limit:
            ids, cuts = ids[:limit], cuts + 1
        return ids, cuts

    def _room_after(self, used: int, observations: Sequence[Observation]) -> int:
        for observation in observations:
            used += len(self._observation_ids(observation, used)[0])
        return self.response_budget - used

    def _metrics(self, run: _Run, wall: float) -> dict[str, float]:
        rows = run.rows
        if not rows:
            return {}
        turns = [row.turns for row in rows]
        metrics = {
            "rollout/turn_wait_s": sum(row.step_wait_s for row in rows) / len(rows),
            "rollout/engine_idle_frac": max(0.0, 1.0 - run.engine_s / wall) if wall > 0 else 0.0,
            "rollout/wall_s": wall,
            # no loop that waits for all its trajectories ends sooner: the slowest one's own time
            "rollout/floor_s": max(row.generate_s + row.step_wait_s for row in rows),
            "rollout/turns_min": float(min(turns)),
            "rollout/turns_max": float(max(turns)),
        }
        for k in range(self.max_turns + 2):
            metrics[f"rollout/turns_frac_{k}"] = turns.count(k) / len(rows)
        return metrics


def _run_to_completion(coroutine: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run``, also from code that already runs an event loop (a notebook, an async
    actor): the coroutine then gets a loop of its own on a thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coroutine)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="agent-loop") as thread:
        thread.submit(asyncio.run, coroutine).result()


class _TurnQueue:
    """The engine under ``async``: turns queue up while a generation call runs, and the queued
    turns go in the next call, on a thread of its own so that environment steps go on meanwhile.
    A free engine waits up to ``gather_window_s`` for trajectories still stepping to queue too
    (and no longer once none is): steps that end together are generated together, not one by one."""

    def __init__(self, agent: AgentLoop, run: _Run):
        self.agent, self.run = agent, run
        self.pending: dict[int, asyncio.Future] = {}
        self.running: asyncio.Task | None = None
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="generate")
        self.in_steps = 0
        self.changed = asyncio.Event()

    @contextlib.contextmanager
    def stepping(self) -> Iterator[None]:
        self.in_steps += 1
        try:
            yield
        finally:
            self.in_steps -= 1
            self.changed.set()

    async def generate(self, i: int) -> tuple[list[int], list[float]]:
        future = asyncio.get_running_loop().create_future()
        self.pending[i] = future
        self.changed.set()
        if self.running is None:
            # Started as a task: the trajectories queued in this same pass join its first call.
            self.running = asyncio.create_task(self._drain())
        return await future

    async def _gather(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.agent.gather_window_s
        while self.in_steps and loop.time() < deadline:
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), deadline - loop.time())
            except asyncio.TimeoutError:
                return

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.pending:
                await self._gather()
                batch, self.pending = self.pending, {}
                try:
                    sampled = await loop.run_in_executor(self.thread, self.agent._generate, self.run, sorted(batch))
                except Exception as error:
                    for future in batch.values():
                        if not future.done():  # its trajectory may have been cancelled
                            future.set_exception(error)
                    continue
                for i, future in batch.items():
                    if not future.done():
                        future.set_result(sampled[i])
        finally:
            self.running = None
