"""Multi-turn rollout: the policy reasons, searches, reads documents and answers.

Plugged into the engine as ``actor_rollout_ref.rollout.generation_manager=
zerosearch.generation:SearchGenerationManager``. Each turn generates for the rows still active,
stops at ``</search>`` or ``</answer>``, parses the first action and appends an observation as
token ids. Sampled tokens keep the exact ids the rollout produced (mask 1) and the log-probs it
sampled them with (``rollout_log_probs``); observation tokens (documents, invalid-action notices)
carry mask 0, so the policy loss, entropy, KL and the advantage/value targets never train on them.
Each row's accepted answer (the first complete ``<answer>`` action of a turn, or None) goes to the
reward as ``accepted_answer``, so the reward scores exactly what the rollout accepted.

With the critic LLM on (``critictor``), training rollouts may get a one-line critique after a
search's documents (an observation like them), and once every row is done the critic grades each
search; the grades become turn rewards (``turn_scores``, ``turn_graded``, ``turn_ids``).

Over 400 lines on purpose: each stage of a turn (generate, parse, search, critique, grade) works
on the same per-row record (``Trajectory``) and reads best beside the others.
"""

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from verl.algos.core_algos import normalize_turn_scores
from verl.protocol import DataProto, RolloutSettings
from verl.trainer.metrics import timer
from verl.utils.batch_schema import Key, sequence_tensors
from verl.utils.torch_functional import left_pad, position_ids, right_pad
from zerosearch import critic, prompts
from zerosearch.config import CurriculumConfig, ZeroSearchConfig
from zerosearch.curriculum import NoiseSchedule
from zerosearch.data.fields import row_golden_answers, row_question, row_supporting
from zerosearch.search import SIMULATED_MODES, build_backend
from zerosearch.search.base import SearchRequest

_ACTION = re.compile(r"<(search|answer)>(.*?)</\1>", re.DOTALL)


def parse_action(text: str) -> tuple[str | None, str]:
    """The first complete ``<search>``/``<answer>`` action of one turn's text: (kind, content).
    ``(None, "")`` when the turn has no valid action (no tag, or an empty one)."""
    match = _ACTION.search(text)
    if match is None or not match.group(2).strip():
        return None, ""
    return match.group(1), match.group(2).strip()


@dataclass
class Trajectory:
    prompt: list[int]
    question: str
    golden_answers: tuple[str, ...]
    key: str  # stable identity for reproducible noise draws
    supporting: tuple[critic.Fact, ...] = ()  # the gold path's facts, for the critic
    response: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    log_probs: list[float] = field(default_factory=list)  # the rollout's, 0 on observations
    answer: str | None = None  # the accepted answer, None until (unless) one is given
    done: bool = False
    turns: int = 0
    searches: int = 0
    invalid: int = 0
    answered: bool = False
    truncated_observations: int = 0
    out_of_budget: bool = False
    log: list[critic.Turn] = field(default_factory=list)  # every turn, for the critic and the dump
    graded: bool = False  # the critic's verdicts arrived

    def reviewed(self) -> critic.Trajectory:
        """What the critic sees of this trajectory."""
        return critic.Trajectory(self.question, self.golden_answers, self.log, self.answer, self.supporting)

    def append(self, ids: list[int], log_probs: list[float] | None = None) -> None:
        """Sampled tokens come with their log-probs; observation tokens (``log_probs`` None) get mask 0."""
        self.response.extend(ids)
        self.mask.extend([0 if log_probs is None else 1] * len(ids))
        self.log_probs.extend([0.0] * len(ids) if log_probs is None else log_probs)


class SearchGenerationManager:
    def __init__(self, config: ZeroSearchConfig, actor_rollout_wg: Any, tokenizer: PreTrainedTokenizerBase):
        self.config = config
        self.wg = actor_rollout_wg
        self.tokenizer = tokenizer
        self.agent = config.agent
        self.turn_tokens = config.data.max_response_length
        self.response_budget = config.response_width()
        self.noise = NoiseSchedule(config.search.curriculum, seed=config.trainer.seed)
        self.train_backend = build_backend(config.search.mode, config.search)
        self._eval_backend = self.train_backend if config.search.engine == config.search.mode else None
        self.pad_id = tokenizer.pad_token_id
        self.has_log_probs = True  # whether every turn of the current batch came with rollout log-probs
        c = config.critictor
        self.critictor = critic.build_critic(c, config.trainer.seed) if c.enabled() else None
        # Critiques are drawn per search like the noise: a fixed chance, and a vague-line chance on a curriculum.
        base = config.search.curriculum.base
        self.critique_draw = NoiseSchedule(
            CurriculumConfig(c.interactive.probability, c.interactive.probability, base), config.trainer.seed
        )
        self.vague_draw = NoiseSchedule(
            CurriculumConfig(c.interactive.vague_start, c.interactive.vague_end, base), config.trainer.seed
        )

    @property
    def eval_backend(self):
        """Built on first validation, so a run that never validates never needs its credentials."""
        if self._eval_backend is None:
            self._eval_backend = build_backend(self.config.search.engine, self.config.search)
        return self._eval_backend

    # ---- the loop --------------------------------------------------------------------------------
    def generate_sequences(self, batch: DataProto) -> DataProto:
        settings = RolloutSettings.of(batch)
        validate = settings.validate
        n = self.config.actor_rollout_ref.rollout.val_kwargs.n if validate else self.config.actor_rollout_ref.rollout.n
        batch = batch.repeat(n, interleave=True)
        step, total = settings.step, max(settings.total_steps, 1)
        backend = self.eval_backend if validate else self.train_backend
        use_noise = not validate and self.config.search.mode in SIMULATED_MODES
        use_critic = None if validate else self.critictor
        critiques = use_critic is not None and self.config.critictor.interactive.enable
        before = dict(backend.stats)
        critic_before = dict(self.critictor.stats) if self.critictor else {}
        self.has_log_probs = True
        rows = self._trajectories(batch, n, needs_question=use_noise or use_critic is not None)
        noisy_draws: list[bool] = []
        waited: dict[str, float] = {}
        for turn in range(self.agent.max_turns + 1):
            if all(t.done for t in rows):
                break
            queries = self._generate_turn(rows, settings, last_turn=turn == self.agent.max_turns)
            if queries:
                noisy = (
                    self.noise.draw(step, total, [f"{t.key}:{turn}" for t, _ in queries])
                    if use_noise
                    else [False] * len(queries)
                )
                noisy_draws.extend(noisy)
                requests = [
                    SearchRequest(q, t.question, t.golden_answers, flag)
                    for (t, q), flag in zip(queries, noisy, strict=True)
                ]
                with timer("search", waited):
                    results = backend.search(requests)
                for (t, _), result in zip(queries, results, strict=True):
                    t.log[-1].documents = result.documents
                    self._observe_documents(t, result.documents)
                if critiques:
                    with timer("critic", waited):
                        self._critique([t for t, _ in queries], step, total, turn)
        if use_critic is not None and self.config.critictor.retrospective.enable:
            with timer("critic", waited):
                self._grade(rows)
        out = self._to_dataproto(batch, rows)
        metrics = self._metrics(
            rows, backend, before, noisy_draws, self.noise.probability(step, total) if use_noise else None
        )
        metrics["search/seconds"] = waited.get("search", 0.0)  # waiting on the engine, retries and backoff included
        if use_critic is not None:
            metrics.update(self._critic_metrics(rows, critic_before))
            metrics["critictor/seconds"] = waited.get("critic", 0.0)
        out.meta_info["metrics"] = metrics
        out.meta_info["dump_keys"] = ["accepted_answer", "turns"]
        return out

    def _trajectories(self, batch: DataProto, n: int, needs_question: bool) -> list[Trajectory]:
        ids, mask = batch.batch[Key.INPUT_IDS], batch.batch[Key.ATTENTION_MASK].bool()
        extra = batch.non_tensor_batch
        rows = []
        for i in range(len(batch)):
            source = extra["data_source"][i] if "data_source" in extra else ""
            question = row_question(extra, i)
            if needs_question and not question:
                # A simulator asked for useful documents must know what the searcher is after.
                raise ValueError(
                    f"row {i // n} (data_source={source!r}) has no question (extra_info.question or a "
                    "'question' column), which the simulated search needs; prepare data with "
                    "`python -m zerosearch.data.prepare`"
                )
            index = extra["index"][i] if "index" in extra else i // n
            rows.append(
                Trajectory(
                    prompt=ids[i][mask[i]].tolist(),
                    question=question,
                    golden_answers=tuple(row_golden_answers(extra, i)),
                    key=f"{source}:{index}:{i % n}",
                    supporting=row_supporting(extra, i),
                )
            )
        return rows

    def _generate_turn(
        self, rows: list[Trajectory], settings: RolloutSettings, last_turn: bool
    ) -> list[tuple[Trajectory, str]]:
        """One generation for the rows not done; returns the searches to run. Done rows are sent
        empty (nothing is generated for them) so that every row stays on the same rollout worker
        from turn to turn, where the engine kept its context's KV cache."""
        active = [not t.done for t in rows]
        contexts = [t.prompt + t.response if a else [] for t, a in zip(rows, active, strict=True)]
        input_ids, attention_mask = left_pad(contexts, self.pad_id)
        request = DataProto.from_dict(
            tensors={
                Key.INPUT_IDS: input_ids,
                Key.ATTENTION_MASK: attention_mask,
                Key.POSITION_IDS: position_ids(attention_mask),
            },
            # One sample per row (the rows are already repeated), a turn's tokens, stop at an action.
            meta_info={
                "rollout": dataclasses.replace(
                    settings, n=1, max_new_tokens=self.turn_tokens, stop=list(prompts.SEARCH_STOPS)
                )
            },
        )
        out = self.wg.generate_sequences(request)
        if Key.ROLLOUT_LOG_PROBS not in out.batch.keys():
            self.has_log_probs = False
        responses = out.batch[Key.RESPONSES]
        log_probs = out.batch[Key.ROLLOUT_LOG_PROBS] if self.has_log_probs else torch.zeros(responses.shape)
        queries = []
        for t, was_active, response, response_mask, logp in zip(
            rows, active, responses, out.batch[Key.RESPONSE_MASK].bool(), log_probs, strict=True
        ):
            if not was_active:
                continue
            sampled, sampled_logp = response[response_mask].tolist(), logp[response_mask].tolist()
            room = self.response_budget - len(t.response)
            if len(sampled) > room:
                sampled, sampled_logp, t.done, t.out_of_budget = sampled[:room], sampled_logp[:room], True, True
            start = len(t.response)
            t.append(sampled, sampled_logp)
            t.turns += 1
            text = str(self.tokenizer.decode(sampled, skip_special_tokens=True))
            kind, content = parse_action(text)
            t.log.append(critic.Turn(start, len(t.response), text, kind, content))
            if kind == "answer":
                t.done, t.answered, t.answer = True, True, content
            elif t.done or last_turn:
                t.done = True  # the last turn may only answer: a search there is never run
                t.invalid += kind is None
            elif kind == "search":
                t.searches += 1
                queries.append((t, content))
            else:
                t.invalid += 1
                self._observe(t, self._encode(prompts.INVALID_ACTION_NOTICE))
        return queries

    # ---- the critic ----------------------------------------------------------------------------
    def _critique(self, searched: list[Trajectory], step: int, total: int, turn: int) -> None:
        """One line of feedback after some searches' documents, appended like them (mask 0)."""
        assert self.critictor is not None
        interactive = self.config.critictor.interactive
        open_rows = [t for t in searched if not t.done]
        keys = [f"critique:{t.key}:{turn}" for t in open_rows]  # apart from the noise draws' keys
        chosen = [t for t, yes in zip(open_rows, self.critique_draw.draw(step, total, keys), strict=True) if yes]
        vague = self.vague_draw.draw(step, total, [f"vague:{t.key}:{turn}" for t in chosen])
        requests = [
            critic.CritiqueRequest(
                t.question,
                t.log[-1],
                flag,
                t.golden_answers if interactive.privileged else None,
                t.supporting if interactive.privileged else (),
                tuple(before.documents or [] for before in t.log[:-1] if before.searched()),
            )
            for t, flag in zip(chosen, vague, strict=True)
        ]
        for t, flag, line in zip(chosen, vague, self.critictor.critique(requests), strict=True):
            if line is not None:
                t.log[-1].critique, t.log[-1].vague = line, flag
                self._observe(t, self._encode(prompts.format_critique(line)))

    def _grade(self, rows: list[Trajectory]) -> None:
        """The retrospective critic's verdict on every search that ran, kept on its turn."""
        assert self.critictor is not None
        seen = [t.reviewed() for t in rows]
        for t, trajectory, verdicts in zip(rows, seen, self.critictor.grade(seen), strict=True):
            if verdicts is None:
                continue  # a failed or unreadable reply: no turn rewards for this row (counted)
            t.graded = True
            for turn, (useful, reason) in zip(trajectory.searches(), verdicts, strict=True):
                turn.verdict, turn.reason = useful, reason

    def _turn_tensors(self, rows: list[Trajectory], uids: np.ndarray | None) -> dict[str, torch.Tensor]:
        """Each graded search's reward on its last sampled token (normalised over its prompt's group
        by ``critictor.turn_reward_norm``), and every sampled token's turn."""
        shape = (len(rows), self.response_budget)
        turn_ids = torch.full(shape, -1, dtype=torch.long)
        scores, graded = torch.zeros(shape, dtype=torch.float32), torch.zeros(shape, dtype=torch.long)
        for i, t in enumerate(rows):
            for k, turn in enumerate(t.log):
                turn_ids[i, turn.start : turn.end] = k
                if turn.verdict is not None and turn.end > turn.start:
                    scores[i, turn.end - 1] = self.config.critictor.turn_reward(turn.verdict)
                    graded[i, turn.end - 1] = 1
        scores = normalize_turn_scores(scores, graded, uids, self.config.critictor.turn_reward_norm)
        return {Key.TURN_IDS: turn_ids, Key.TURN_SCORES: scores, Key.TURN_GRADED: graded}

    def _encode(self, text: str) -> list[int]:
        """Observation text as plain tokens: a document that spells a special token (``<|im_end|>``)
        stays text and cannot forge a chat turn in the policy's context."""
        return self.tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)

    def _observe_documents(self, t: Trajectory, documents: list[str]) -> None:
        """A search result block; when too long, the documents are cut and the block stays closed."""
        ids = self._encode(prompts.format_observation(documents))
        limit = self._observation_limit(t)
        if len(ids) > limit:
            opening, closing = self._encode(prompts.OBSERVATION_OPEN), self._encode(prompts.OBSERVATION_CLOSE)
            room = limit - len(opening) - len(closing)
            if room > 0:
                ids = opening + self._encode(prompts.observation_body(documents))[:room] + closing
                t.truncated_observations += 1
        self._observe(t, ids)  # cuts (and counts) only what is still too long

    def _observation_limit(self, t: Trajectory) -> int:
        return max(min(self.agent.max_obs_length, self.response_budget - len(t.response)), 0)

    def _observe(self, t: Trajectory, ids: list[int]) -> None:
        """Appends observation tokens (mask 0), cut to max_obs_length and to the row's budget."""
        limit = self._observation_limit(t)
        if len(ids) > limit:
            ids = ids[:limit]
            t.truncated_observations += 1
        t.append(ids)
        if len(t.response) >= self.response_budget:
            t.done, t.out_of_budget = True, True

    # ---- packing -----------------------------------------------------------------------------
    def _to_dataproto(self, batch: DataProto, rows: list[Trajectory]) -> DataProto:
        width = self.response_budget
        tensors = sequence_tensors(
            batch.batch[Key.INPUT_IDS],
            batch.batch[Key.ATTENTION_MASK],
            right_pad([t.response for t in rows], width, self.pad_id, torch.long),
            right_pad([t.mask for t in rows], width, 0, torch.long),
            # observations are part of the context the policy attends to
            right_pad([[1] * len(t.response) for t in rows], width, 0, torch.long),
        )
        if self.has_log_probs:
            tensors[Key.ROLLOUT_LOG_PROBS] = right_pad([t.log_probs for t in rows], width, 0.0, torch.float32)
        if any(t.graded for t in rows):
            tensors.update(self._turn_tensors(rows, batch.non_tensor_batch.get("uid")))
        out = DataProto.from_dict(
            tensors=tensors,
            non_tensors={
                "num_turns": np.array([t.turns for t in rows]),
                "num_searches": np.array([t.searches for t in rows]),
                "accepted_answer": _objects([t.answer for t in rows]),
                "turns": _objects([[turn.record() for turn in t.log] for t in rows]),
            },
            meta_info=dict(batch.meta_info),
        )
        return out.union(DataProto.from_dict(non_tensors=dict(batch.non_tensor_batch)))

    def _critic_metrics(self, rows: list[Trajectory], before: dict) -> dict[str, float]:
        assert self.critictor is not None
        searches = [turn for t in rows for turn in t.log if turn.searched()]
        graded = [turn for turn in searches if turn.verdict is not None]
        critiques = [turn for turn in searches if turn.critique is not None]
        metrics = {
            "critictor/failures": float(self.critictor.stats.get("failures", 0) - before.get("failures", 0)),
            "critictor/retries": float(self.critictor.stats.get("retries", 0) - before.get("retries", 0)),
            "critictor/timeouts": float(self.critictor.stats.get("timeouts", 0) - before.get("timeouts", 0)),
        }
        if self.config.critictor.retrospective.enable:
            rewards = [self.config.critictor.turn_reward(bool(turn.verdict)) for turn in graded]
            metrics["critictor/graded_rate"] = len(graded) / max(len(searches), 1)
            metrics["critictor/useful_rate"] = float(np.mean([turn.verdict for turn in graded])) if graded else 0.0
            metrics["critictor/turn_reward_mean"] = float(sum(rewards)) / max(len(rows), 1)
            metrics.update(self._agreement_metrics(rows))
        if self.config.critictor.interactive.enable:
            metrics["critictor/critiques_mean"] = len(critiques) / max(len(rows), 1)
            metrics["critictor/vague_rate"] = float(np.mean([turn.vague for turn in critiques])) if critiques else 0.0
        return metrics

    @staticmethod
    def _agreement_metrics(rows: list[Trajectory]) -> dict[str, float]:
        """The verdicts against the path judge's over the graded searches (``critic.agreement``),
        and how far the answer judge agrees with the path judge on the same searches."""
        verdicts, path, answer = [], [], []
        for t in rows:
            if not t.graded:
                continue
            seen = t.reviewed()
            verdicts += [bool(turn.verdict) for turn in seen.searches()]
            path += seen.judged("path")
            answer += seen.judged("answer")
        metrics = {f"critictor/{k}": float(v) for k, v in critic.agreement(verdicts, path).items() if v is not None}
        metrics.pop("critictor/turns", None)
        answer_share = critic.agreement(answer, path)["agreement"]  # None without graded searches
        if answer_share is not None:
            metrics["critictor/answer_judge_agreement"] = float(answer_share)
        return metrics

    @staticmethod
    def _metrics(rows, backend, before: dict, noisy: list[bool], noise_p: float | None) -> dict[str, float]:
        def mean(values) -> float:
            return float(np.mean(values)) if len(values) else 0.0

        turns = sum(t.turns for t in rows)
        metrics = {
            "search/turns_mean": mean([t.turns for t in rows]),
            "search/searches_mean": mean([t.searches for t in rows]),
            "search/valid_action_rate": 1.0 - sum(t.invalid for t in rows) / max(turns, 1),
            "search/answer_rate": mean([t.answered for t in rows]),
            "search/obs_truncated": float(sum(t.truncated_observations for t in rows)),
            "search/out_of_budget_rate": mean([t.out_of_budget for t in rows]),
            "search/failures": float(backend.stats.get("failures", 0) - before.get("failures", 0)),
            "search/cache_hits": float(backend.stats.get("cache_hits", 0) - before.get("cache_hits", 0)),
            "search/retries": float(backend.stats.get("retries", 0) - before.get("retries", 0)),
            "search/timeouts": float(backend.stats.get("timeouts", 0) - before.get("timeouts", 0)),
        }
        if noise_p is not None:
            metrics["curriculum/noise_p"] = noise_p
            metrics["search/noisy_rate"] = mean(noisy)
        return metrics


def _objects(values: list) -> np.ndarray:
    """A 1-D object array, even when every value is a list of the same length."""
    array = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        array[i] = value
    return array
