"""The search agent as an environment of the engine's agent loop (``verl.workers.rollout.agent_loop``).

A ``SearchEnv`` is one trajectory: it reads each sampled turn's first action, runs a ``<search>``
(the curriculum's noise drawn per trajectory and turn), answers with the documents and, when the
interactive critic is on, one line of critique; it accepts the first ``<answer>``. What the
critic needs afterwards (every turn's text, action, documents and critique) is kept in ``log``.
Environments of one rollout share a ``SearchSession``: the backend, the draws, the critic.
"""

import json
import re
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from verl.workers.rollout.agent_loop import AgentEnv, Observation, Step, Turn
from zerosearch import critic, prompts
from zerosearch.curriculum import NoiseSchedule
from zerosearch.search.base import SearchBackend, SearchRequest

E = TypeVar("E", bound="SearchEnv")
_ACTION = re.compile(r"<(search|answer)>(.*?)</\1>", re.DOTALL)


_TOOL_ACTION = re.compile(r"<(tool_call|answer)>(.*?)</\1>", re.DOTALL)


def parse_action(text: str, action_format: str = "tags") -> tuple[str | None, str]:
    """The first complete action of one turn's text: (``search`` or ``answer``, its content).
    ``(None, "")`` when the turn has no valid action (no tag, an empty one, or a tool call that is
    not a search with a query). With ``action_format=tool_call`` a search is a call of the search
    tool, ``<tool_call>{"name": "search", "arguments": {"query_list": [...]}}</tool_call>``."""
    match = (_TOOL_ACTION if action_format == "tool_call" else _ACTION).search(text)
    if match is None or not match.group(2).strip():
        return None, ""
    kind, content = match.group(1), match.group(2).strip()
    if kind == "tool_call":
        return _search_call(content)
    return kind, content


def _search_call(content: str) -> tuple[str | None, str]:
    try:
        call = json.loads(content)
    except json.JSONDecodeError:
        return None, ""
    arguments = call.get("arguments") if isinstance(call, dict) else None
    if not isinstance(arguments, dict) or call.get("name") != prompts.SEARCH_TOOL_NAME:
        return None, ""
    queries = arguments.get("query_list", arguments.get("query"))
    query = queries[0] if isinstance(queries, list) and queries else queries
    return ("search", query.strip()) if isinstance(query, str) and query.strip() else (None, "")


@dataclass
class SearchSession:
    """What one rollout's environments share."""

    backend: SearchBackend
    step: int  # the training step, for the curriculum's draws
    total_steps: int
    noise: NoiseSchedule | None = None  # None: no noisy documents (validation, a real engine)
    critictor: Any = None  # a critic with ``critique``, when the interactive critic is on
    critique_draw: NoiseSchedule | None = None
    vague_draw: NoiseSchedule | None = None
    privileged: bool = False  # the critique sees the gold answers and path
    # action_format=tool_call: the chat template's text around a tool's answer (tool_response_frame);
    # None: tags, documents in <information>
    tool_frame: tuple[str, str] | None = None
    seconds: defaultdict[str, float] = field(
        default_factory=lambda: defaultdict(float)
    )  # search / critic call time, summed over calls
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def documents(self, body: str) -> Observation:
        """A search's documents as an observation: a tool's answer in the chat template's turn, or
        the <information> block."""
        if self.tool_frame is not None:
            return Observation(body, *self.tool_frame, frame_tokens=True)
        return Observation(body, prompts.OBSERVATION_OPEN, prompts.OBSERVATION_CLOSE)

    def timed(self, what: str, call, *args):
        started = time.perf_counter()
        try:
            return call(*args)
        finally:
            with self._lock:
                self.seconds[what] += time.perf_counter() - started


@dataclass(eq=False)
class SearchEnv(AgentEnv):
    session: SearchSession
    question: str
    golden_answers: tuple[str, ...]
    key: str  # stable identity for reproducible draws
    supporting: tuple[critic.Fact, ...] = ()  # the gold path's facts, for the critic
    answer: str | None = None  # the accepted answer, None until (unless) one is given
    searches: int = 0
    invalid: int = 0
    answered: bool = False
    noisy: list[bool] = field(default_factory=list)  # the noise draw of each search
    log: list[critic.Turn] = field(default_factory=list)  # every turn, for the critic and the dump
    graded: bool = False  # the critic's verdicts arrived
    stop: ClassVar[tuple[str, ...]] = tuple(prompts.SEARCH_STOPS)

    @classmethod
    def stops(cls, config: Any) -> tuple[str, ...]:
        return tuple(prompts.TOOL_CALL_STOPS if _tool_calls(config) else prompts.SEARCH_STOPS)

    @classmethod
    def tools(cls, config: Any) -> list[dict[str, Any]]:
        return [prompts.SEARCH_TOOL] if _tool_calls(config) else []

    manager: ClassVar[str | None] = "zerosearch.generation:SearchGenerationManager"

    @classmethod
    def for_rows(cls, config: Any, rows: Sequence[dict[str, Any]], settings: Any) -> list["SearchEnv"]:
        raise ValueError(
            f"{cls.__name__} shares a search backend, curriculum and critic across a rollout, which the search "
            "agent's manager builds: set actor_rollout_ref.rollout.generation_manager="
            "zerosearch.generation:SearchGenerationManager (the zerosearch recipes do)"
        )

    def outcome(self) -> dict[str, Any]:
        return {"accepted_answer": self.answer}

    def reviewed(self) -> critic.Trajectory:
        """What the critic sees of this trajectory."""
        return critic.Trajectory(self.question, self.golden_answers, self.log, self.answer, self.supporting)

    def read(self, turn: Turn) -> tuple[Step, str | None]:
        """Records a turn and says what it does: the step, and the query when it searches."""
        tool_calls = self.session.tool_frame is not None
        kind, content = parse_action(turn.text, "tool_call" if tool_calls else "tags")
        self.log.append(critic.Turn(turn.start, turn.end, turn.text, kind, content))
        if kind == "answer":
            self.answered, self.answer = True, content
            return Step(done=True), None
        if turn.final:  # the last turn may only answer: a search there is never run
            self.invalid += kind is None
            return Step(done=True), None
        if kind == "search":
            self.searches += 1
            return Step(), content
        self.invalid += 1
        notice = prompts.INVALID_TOOL_CALL_NOTICE if tool_calls else prompts.INVALID_ACTION_NOTICE
        return Step([Observation(notice)]), None

    @classmethod
    def step_batch(cls: type[E], envs: Sequence[E], turns: Sequence[Turn]) -> list[Step]:
        """Every search of the batch in one backend call, then their critiques in one critic call."""
        read = [env.read(turn) for env, turn in zip(envs, turns, strict=True)]
        searching = [
            (env, turn, step, query) for env, turn, (step, query) in zip(envs, turns, read, strict=True) if query
        ]
        if searching:
            session = searching[0][0].session
            noisy = (
                session.noise.draw(
                    session.step, session.total_steps, [f"{e.key}:{t.index}" for e, t, _, _ in searching]
                )
                if session.noise is not None
                else [False] * len(searching)
            )
            requests = [
                SearchRequest(query, env.question, env.golden_answers, flag)
                for (env, _, _, query), flag in zip(searching, noisy, strict=True)
            ]
            results = session.timed("search", session.backend.search, requests)
            for (env, _, step, _), flag, result in zip(searching, noisy, results, strict=True):
                env.noisy.append(flag)
                env.log[-1].documents = result.documents
                body = prompts.observation_body(result.documents)
                step.observations.append(session.documents(body))
            if session.critictor is not None:
                cls._critique(session, [(env, turn, step) for env, turn, step, _ in searching])
        return [step for step, _ in read]

    @staticmethod
    def _critique(session: SearchSession, searched: list[tuple["SearchEnv", Turn, Step]]) -> None:
        """One line of feedback after some searches' documents, where room is left for it."""
        assert session.critique_draw is not None and session.vague_draw is not None
        open_rows = [(env, turn, step) for env, turn, step in searched if turn.room_after(step.observations) > 0]
        keys = [f"critique:{env.key}:{turn.index}" for env, turn, _ in open_rows]  # apart from the noise keys
        draws = session.critique_draw.draw(session.step, session.total_steps, keys)
        chosen = [(env, turn, step) for (env, turn, step), yes in zip(open_rows, draws, strict=True) if yes]
        vague_keys = [f"vague:{env.key}:{turn.index}" for env, turn, _ in chosen]
        vague = session.vague_draw.draw(session.step, session.total_steps, vague_keys)
        requests = [
            critic.CritiqueRequest(
                env.question,
                env.log[-1],
                flag,
                env.golden_answers if session.privileged else None,
                env.supporting if session.privileged else (),
                tuple(before.documents or [] for before in env.log[:-1] if before.searched()),
            )
            for (env, _, _), flag in zip(chosen, vague, strict=True)
        ]
        lines = session.timed("critic", session.critictor.critique, requests) if requests else []
        for (env, _, step), flag, line in zip(chosen, vague, lines, strict=True):
            if line is not None:
                env.log[-1].critique, env.log[-1].vague = line, flag
                step.observations.append(Observation(prompts.format_critique(line)))


def _tool_calls(config: Any) -> bool:
    return config.actor_rollout_ref.rollout.agent.action_format == "tool_call"
