"""The chat LLMs the agent talks to besides the policy, the simulation LLM and the critic LLM,
through one machinery: a batch of conversations in, one reply per conversation out (None when every
attempt failed), with bounded concurrency, a deadline per attempt and per batch, bounded retries
with exponential backoff, and retries counted. A reply the caller's ``accept`` refuses (no
documents, an unreadable verdict) counts as a failed attempt. API keys come from the environment
and are never logged.

- ``ServerChatLLM``: OpenAI-compatible chat-completions servers (vLLM, sglang), used in turn; each
  attempt, retries included, goes to the next server, so a dead server costs one attempt, and a
  server that failed several attempts in a row is skipped for a cool-down.
- ``LocalChatLLM``: a transformers model on a Ray actor (CPU machines, tests); one actor call per
  batch, retried as a whole.
"""

import functools
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

import ray
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from verl.config import RayInitConfig
from verl.trainer.startup import init_ray
from zerosearch.retry import DeadlineExceeded, RetryConfig, redact, retrying, within

if TYPE_CHECKING:
    from zerosearch.config import EndpointConfig

logger = logging.getLogger(__name__)
Conversation = list[dict[str, str]]
Accept = Callable[[str], bool]  # whether a reply is usable; an unusable one is retried


class ChatLLM(Protocol):
    stats: Counter[str]  # retries

    def complete(
        self,
        conversations: Sequence[Conversation],
        max_tokens: int,
        temperature: float,
        accept: Accept | Sequence[Accept] | None = None,
    ) -> list[str | None]: ...


def acceptance(accept: Accept | Sequence[Accept] | None, n: int) -> list[Accept | None]:
    """One check per conversation: ``accept`` is one for all, one per conversation, or None."""
    if accept is None or callable(accept):
        return [accept] * n
    if len(accept) != n:
        raise ValueError(f"{len(accept)} acceptance checks for {n} conversations")
    return list(accept)


class RefusedReply(ValueError):
    """A reply the caller cannot use; retried like a failed request."""


class ServerChatLLM:
    def __init__(
        self,
        server_urls: Sequence[str],
        model: str,
        api_key: str = "EMPTY",
        retry: RetryConfig | None = None,
    ):
        import openai

        if not server_urls:
            raise ValueError("a chat LLM server needs at least one URL")
        self.model = model
        self._secret = "" if api_key == "EMPTY" else api_key
        self.retry = retry or RetryConfig()
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        # The client's own retries are off: the RetryConfig alone bounds the attempts.
        self._clients = [
            openai.OpenAI(base_url=url, api_key=api_key, timeout=self.retry.timeout_s, max_retries=0)
            for url in server_urls
        ]
        self._turn = 0
        self._failures_in_a_row = [0] * len(server_urls)
        self._skipped_until = [0.0] * len(server_urls)  # time.monotonic() at which a cooling server is back

    def _next_server(self) -> int:
        """The next server in turn that is not cooling down; when all are, the one back soonest."""
        with self._lock:
            now = time.monotonic()
            for _ in self._clients:
                server = self._turn % len(self._clients)
                self._turn += 1
                if self._skipped_until[server] <= now:
                    return server
            return min(range(len(self._clients)), key=self._skipped_until.__getitem__)

    def _record(self, server: int, failed: bool) -> None:
        with self._lock:
            self._failures_in_a_row[server] = self._failures_in_a_row[server] + 1 if failed else 0
            if self._failures_in_a_row[server] >= self.retry.cooldown_after and len(self._clients) > 1:
                self._failures_in_a_row[server] = 0
                self._skipped_until[server] = time.monotonic() + self.retry.cooldown_s
                self.stats["cooldowns"] += 1
                logger.warning(
                    "%s failed %d times in a row: skipped for %.0f s",
                    self._clients[server].base_url,
                    self.retry.cooldown_after,
                    self.retry.cooldown_s,
                )

    def _one(
        self, conversation: Conversation, max_tokens: int, temperature: float, accept: Accept | None, deadline: float
    ) -> str:
        server = self._next_server()
        client: Any = self._clients[server]  # messages are plain dicts, which the typed client does not name
        try:
            reply = within(
                lambda: client.chat.completions.create(
                    model=self.model, messages=conversation, max_tokens=max_tokens, temperature=temperature
                ),
                self.retry.attempt_seconds(deadline),
            )
        except DeadlineExceeded:
            self._record(server, failed=True)
            raise
        except Exception as e:
            self._record(server, failed=True)
            # A server may quote the key back (a 401's "Incorrect API key provided: ..."); `from None`
            # keeps the original message out of any traceback.
            raise RuntimeError(f"{client.base_url}: {type(e).__name__}: {redact(str(e), self._secret)}") from None
        self._record(server, failed=False)  # it answered: an unusable reply is the model's fault, not the server's
        text = (reply.choices[0].message.content or "") if reply.choices else ""
        if accept is not None and not accept(text):
            raise RefusedReply(f"{client.base_url} replied with nothing usable: {redact(text[:200], self._secret)!r}")
        return text

    def complete(
        self,
        conversations: Sequence[Conversation],
        max_tokens: int,
        temperature: float,
        accept: Accept | Sequence[Accept] | None = None,
    ) -> list[str | None]:
        if not conversations:
            return []
        checks = acceptance(accept, len(conversations))
        deadline = self.retry.batch_deadline()

        def one(i: int) -> str | None:
            attempt = functools.partial(self._one, conversations[i], max_tokens, temperature, checks[i], deadline)
            what = f"chat request to {self.model!r}"
            return retrying(attempt, self.retry, self.stats, self._lock, what, deadline)

        with ThreadPoolExecutor(max_workers=max(1, min(self.retry.concurrency, len(conversations)))) as pool:
            return list(pool.map(one, range(len(conversations))))


class ChatModelActor:
    """Hosts one causal LM with a chat template and answers batches of conversations."""

    def __init__(self, model_path: str):
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="left")
        if self.tokenizer.chat_template is None:
            raise ValueError(
                f"the chat model at {model_path} has no chat template; use an instruct or tuned checkpoint"
            )
        if self.tokenizer.pad_token_id is None:  # batching needs a pad id; eos is never attended to
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_path).eval()

    def generate(self, conversations: list[Conversation], max_tokens: int, temperature: float) -> list[str]:
        prompts = [
            self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            for messages in conversations
        ]
        # The chat template already holds any special tokens the model expects.
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        with torch.no_grad():
            output = self.model.generate(
                **batch, max_new_tokens=max_tokens, pad_token_id=self.tokenizer.pad_token_id, **sampling
            )
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        return list(self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True))


class _Gatherer:
    """Calls that arrive while one runs wait, and those of one key go out together in the next, on
    a thread that serves while calls are waiting and then ends (holding nothing of its callers):
    callers of one conversation each (the steps of an asynchronous rollout) still make batches."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queue: list[tuple[Hashable, list, Future, Callable[[list], list]]] = []
        self.serving = False

    def __call__(self, run: Callable[[list], list], items: list, key: Hashable) -> list:
        """``run(items)``'s value, ``run`` called on these items and on those of calls sharing ``key``."""
        future: Future = Future()
        with self.lock:
            self.queue.append((key, items, future, run))
            start, self.serving = not self.serving, True
        if start:
            threading.Thread(target=self._serve, daemon=True, name="chat-batches").start()
        return future.result()

    def _serve(self) -> None:
        while True:
            with self.lock:
                if not self.queue:
                    self.serving = False
                    return
                key, run = self.queue[0][0], self.queue[0][3]
                calls = [call for call in self.queue if call[0] == key]
                self.queue = [call for call in self.queue if call[0] != key]
            try:
                replies = run([item for _, items, _, _ in calls for item in items])
            except BaseException as error:  # every caller of the batch sees it (and retries on its own)
                for _, _, future, _ in calls:
                    future.set_exception(error)
                continue
            start = 0
            for _, items, future, _ in calls:
                future.set_result(replies[start : start + len(items)])
                start += len(items)


class LocalChatLLM:
    """A reply ``accept`` refuses fails its row only: greedy decoding would write it again.
    Concurrent calls with the same sampling settings share actor calls (``_Gatherer``)."""

    actor_class: type = ChatModelActor

    def __init__(self, model_path: str, retry: RetryConfig | None = None):
        self.model_path = model_path
        self.retry = (retry or RetryConfig()).without_deadlines()
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._actor: Any = None
        self._gathered = _Gatherer()

    def _get_actor(self) -> Any:
        with self._lock:
            if self._actor is None:
                init_ray(RayInitConfig())  # unless the trainer started it: a private one on loopback
                # No CPU reservation: the slots belong to the training workers.
                self._actor = ray.remote(num_cpus=0)(self.actor_class).remote(self.model_path)
            return self._actor

    def _generate(self, conversations: list[Conversation], max_tokens: int, temperature: float) -> list[str]:
        run = functools.partial(self._generate_now, max_tokens=max_tokens, temperature=temperature)
        return self._gathered(run, conversations, (max_tokens, temperature))

    def _generate_now(self, conversations: list[Conversation], max_tokens: int, temperature: float) -> list[str]:
        try:
            return list(ray.get(self._get_actor().generate.remote(conversations, max_tokens, temperature)))
        except ray.exceptions.RayActorError:
            self._actor = None  # a dead actor is replaced on the next attempt
            raise

    def complete(
        self,
        conversations: Sequence[Conversation],
        max_tokens: int,
        temperature: float,
        accept: Accept | Sequence[Accept] | None = None,
    ) -> list[str | None]:
        if not conversations:
            return []
        batch = list(conversations)
        attempt = functools.partial(self._generate, batch, max_tokens, temperature)
        replies = retrying(
            attempt, self.retry, self.stats, self._lock, f"a batch of {len(batch)} for {self.model_path}"
        )
        if replies is None:
            return [None] * len(batch)
        checks = acceptance(accept, len(batch))
        return [reply if check is None or check(reply) else None for reply, check in zip(replies, checks, strict=True)]


def build_chat_llm(endpoint: "EndpointConfig", in_process: bool, retry: RetryConfig) -> ChatLLM:
    """``in_process``: the endpoint's ``model`` is a local folder hosted on a Ray actor; otherwise the
    served model name on its ``server_urls``, with the key (if any) read from ``$api_key_env``."""
    if in_process:
        return LocalChatLLM(os.path.abspath(os.path.expanduser(endpoint.model)), retry)
    api_key = os.environ.get(endpoint.api_key_env, "") if endpoint.api_key_env else ""
    return ServerChatLLM(list(endpoint.server_urls), endpoint.model, api_key=api_key or "EMPTY", retry=retry)
