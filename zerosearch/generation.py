"""Multi-turn rollout: the policy reasons, searches, reads documents and answers.

Plugged into the engine as ``actor_rollout_ref.rollout.generation_manager=
zerosearch.generation:SearchGenerationManager``. The engine's agent loop
(``verl.workers.rollout.agent_loop``) runs the turns, with ``batch`` or ``async`` scheduling
(``actor_rollout_ref.rollout.agent.scheduling``); each trajectory's environment is a ``SearchEnv``
(``zerosearch.env``): it parses the first action, runs the search and answers with documents.
Sampled tokens keep the exact ids the rollout produced (mask 1) and the log-probs it sampled them
with (``rollout_log_probs``); observation tokens (documents, invalid-action notices) carry mask 0,
so the policy loss, entropy, KL and the advantage/value targets never train on them. Each row's
accepted answer (the first complete ``<answer>`` action of a turn, or None) goes to the reward as
``accepted_answer``, so the reward scores exactly what the rollout accepted.

With the critic LLM on (``critictor``), training rollouts may get a one-line critique after a
search's documents (an observation like them), and once every row is done the critic grades each
search; the grades become turn rewards (``turn_scores``, ``turn_graded``, ``turn_ids``).
"""

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from verl.algos.core_algos import normalize_turn_scores
from verl.protocol import DataProto, RolloutSettings
from verl.trainer.metrics import timer
from verl.utils.batch_schema import Key
from verl.workers.rollout.agent_loop import LoopResult, TrajectoryTokens, tool_response_frame
from verl.workers.rollout.agent_manager import AgentGenerationManager, object_column
from zerosearch import critic
from zerosearch.config import CurriculumConfig, ZeroSearchConfig
from zerosearch.curriculum import NoiseSchedule
from zerosearch.data.fields import row_golden_answers, row_question, row_supporting
from zerosearch.env import SearchEnv, SearchSession, parse_action
from zerosearch.search import SIMULATED_MODES, build_backend

__all__ = ["SearchGenerationManager", "parse_action"]


class SearchGenerationManager(AgentGenerationManager):
    def __init__(self, config: ZeroSearchConfig, actor_rollout_wg, tokenizer: PreTrainedTokenizerBase):
        super().__init__(config, actor_rollout_wg, tokenizer)
        if not issubclass(self.env_class, SearchEnv):
            raise ValueError(
                f"{self.env_key}={config.actor_rollout_ref.rollout.agent.env} is not a SearchEnv, which the search "
                "agent's manager runs; another environment runs with generation_manager unset (null)"
            )
        self.search_env: type[SearchEnv] = self.env_class  # a subclass may change how actions read
        agent = config.actor_rollout_ref.rollout.agent
        tools = self.env_class.tools(config)
        self.tool_frame = tool_response_frame(tokenizer, tools) if agent.action_format == "tool_call" else None
        self.noise = NoiseSchedule(config.search.curriculum, seed=config.trainer.seed)
        self.train_backend = build_backend(config.search.mode, config.search)
        self._eval_backend = self.train_backend if config.search.engine == config.search.mode else None
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
        batch, n = self.samples(batch, settings)
        step, total = settings.step, max(settings.total_steps, 1)
        backend = self.eval_backend if validate else self.train_backend
        use_noise = not validate and self.config.search.mode in SIMULATED_MODES
        use_critic = None if validate else self.critictor
        critiques = use_critic is not None and self.config.critictor.interactive.enable
        session = SearchSession(
            backend,
            step,
            total,
            noise=self.noise if use_noise else None,
            critictor=use_critic if critiques else None,
            critique_draw=self.critique_draw,
            vague_draw=self.vague_draw,
            privileged=self.config.critictor.interactive.privileged,
            tool_frame=self.tool_frame,
        )
        before = dict(backend.stats)
        critic_before = dict(self.critictor.stats) if self.critictor else {}
        envs = self._environments(batch, n, session, needs_question=use_noise or use_critic is not None)
        result = self.run(batch, envs, settings)
        waited = dict(session.seconds)
        if use_critic is not None and self.config.critictor.retrospective.enable:
            with timer("critic", waited):
                self._grade(envs)
        out = self._to_dataproto(batch, result, envs)
        noisy = [flag for env in envs for flag in env.noisy]
        noise_p = self.noise.probability(step, total) if use_noise else None
        metrics = self._metrics(result.rows, envs, backend, before, noisy, noise_p)
        metrics.update(result.metrics)
        # time in search calls, retries and backoff included; summed over calls, which overlap under async
        metrics["search/seconds"] = waited.get("search", 0.0)
        if use_critic is not None:
            metrics.update(self._critic_metrics(envs, critic_before))
            metrics["critictor/seconds"] = waited.get("critic", 0.0)
        out.meta_info["metrics"] = metrics
        out.meta_info["dump_keys"] = ["accepted_answer", "turns"]
        return out

    def _environments(self, batch: DataProto, n: int, session: SearchSession, needs_question: bool) -> list[SearchEnv]:
        extra = batch.non_tensor_batch
        envs = []
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
            envs.append(
                self.search_env(
                    session,
                    question=question,
                    golden_answers=tuple(row_golden_answers(extra, i)),
                    key=f"{source}:{index}:{i % n}",
                    supporting=row_supporting(extra, i),
                )
            )
        return envs

    # ---- the critic ----------------------------------------------------------------------------
    def _grade(self, envs: list[SearchEnv]) -> None:
        """The retrospective critic's verdict on every search that ran, kept on its turn."""
        assert self.critictor is not None
        seen = [env.reviewed() for env in envs]
        for env, trajectory, verdicts in zip(envs, seen, self.critictor.grade(seen), strict=True):
            if verdicts is None:
                continue  # a failed or unreadable reply: no turn rewards for this row (counted)
            env.graded = True
            for turn, (useful, reason) in zip(trajectory.searches(), verdicts, strict=True):
                turn.verdict, turn.reason = useful, reason

    def _turn_tensors(self, envs: list[SearchEnv], uids: np.ndarray | None) -> dict[str, torch.Tensor]:
        """Each graded search's reward on its last sampled token (normalised over its prompt's group
        by ``critictor.turn_reward_norm``), and every sampled token's turn."""
        shape = (len(envs), self.response_budget)
        turn_ids = torch.full(shape, -1, dtype=torch.long)
        scores, graded = torch.zeros(shape, dtype=torch.float32), torch.zeros(shape, dtype=torch.long)
        for i, env in enumerate(envs):
            for k, turn in enumerate(env.log):
                turn_ids[i, turn.start : turn.end] = k
                if turn.verdict is not None and turn.end > turn.start:
                    scores[i, turn.end - 1] = self.config.critictor.turn_reward(turn.verdict)
                    graded[i, turn.end - 1] = 1
        scores = normalize_turn_scores(scores, graded, uids, self.config.critictor.turn_reward_norm)
        return {Key.TURN_IDS: turn_ids, Key.TURN_SCORES: scores, Key.TURN_GRADED: graded}

    # ---- packing -----------------------------------------------------------------------------
    def _to_dataproto(self, batch: DataProto, result: LoopResult, envs: list[SearchEnv]) -> DataProto:
        uids = batch.non_tensor_batch.get("uid")
        turn_tensors = self._turn_tensors(envs, uids) if any(env.graded for env in envs) else None
        non_tensors = {
            "num_turns": np.array([t.turns for t in result.rows]),
            "num_searches": np.array([env.searches for env in envs]),
            "accepted_answer": object_column([env.answer for env in envs]),
            "turns": object_column([[turn.record() for turn in env.log] for env in envs]),
        }
        return self.pack(batch, result, non_tensors, turn_tensors)

    def _critic_metrics(self, envs: list[SearchEnv], before: dict) -> dict[str, float]:
        assert self.critictor is not None
        searches = [turn for env in envs for turn in env.log if turn.searched()]
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
            metrics["critictor/turn_reward_mean"] = float(sum(rewards)) / max(len(envs), 1)
            metrics.update(self._agreement_metrics(envs))
        if self.config.critictor.interactive.enable:
            metrics["critictor/critiques_mean"] = len(critiques) / max(len(envs), 1)
            metrics["critictor/vague_rate"] = float(np.mean([turn.vague for turn in critiques])) if critiques else 0.0
        return metrics

    @staticmethod
    def _agreement_metrics(envs: list[SearchEnv]) -> dict[str, float]:
        """The verdicts against the path judge's over the graded searches (``critic.agreement``),
        and how far the answer judge agrees with the path judge on the same searches."""
        verdicts, path, answer = [], [], []
        for env in envs:
            if not env.graded:
                continue
            seen = env.reviewed()
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
    def _metrics(
        rows: list[TrajectoryTokens], envs: list[SearchEnv], backend, before: dict, noisy: list[bool], noise_p
    ) -> dict[str, float]:
        def mean(values) -> float:
            return float(np.mean(values)) if len(values) else 0.0

        turns = sum(t.turns for t in rows)
        metrics = {
            "search/turns_mean": mean([t.turns for t in rows]),
            "search/searches_mean": mean([env.searches for env in envs]),
            "search/valid_action_rate": 1.0 - sum(env.invalid for env in envs) / max(turns, 1),
            "search/answer_rate": mean([env.answered for env in envs]),
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
