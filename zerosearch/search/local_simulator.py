"""Simulated search without a server: the simulation LLM runs with transformers on a Ray actor,
for CPU machines and tests."""

import threading

import ray
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from zerosearch.prompts import parse_documents
from zerosearch.search.base import RetryPolicy, SearchBackend, SearchRequest, SearchResult
from zerosearch.search.simulate import request_messages, simulator_name


class SimulatorActor:
    """Hosts one causal LM and answers batches of chat conversations."""

    def __init__(self, model_path: str):
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="left")
        if self.tokenizer.chat_template is None:
            raise ValueError(
                f"the simulation model at {model_path} has no chat template; "
                "use an instruct or fine-tuned simulator checkpoint"
            )
        if self.tokenizer.pad_token_id is None:  # batching needs a pad id; eos is never attended to
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_path).eval()

    def generate(self, conversations: list[list[dict]], max_tokens: int, temperature: float) -> list[str]:
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
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


class LocalSimulatedSearch(SearchBackend):
    """The prompts and parsing of SimulatedSearch, with each batch sent to the actor in one call.
    A failed call is retried for the whole batch; a reply without documents fails its row only."""

    actor_class = SimulatorActor

    def __init__(
        self,
        model_path: str,
        style: str,
        topk: int,
        max_tokens: int = 256,
        temperature: float = 0.0,
        retry: RetryPolicy | None = None,
    ):
        super().__init__(topk, retry)
        self.name = simulator_name(style)
        self.model_path, self.style = model_path, style
        self.max_tokens, self.temperature = max_tokens, temperature
        self._actor = None
        self._actor_lock = threading.Lock()

    def _get_actor(self):
        with self._actor_lock:
            if self._actor is None:
                if not ray.is_initialized():
                    ray.init(_node_ip_address="127.0.0.1", include_dashboard=False)
                # No CPU reservation: the slots belong to the training workers.
                self._actor = ray.remote(num_cpus=0)(self.actor_class).remote(self.model_path)
            return self._actor

    def _generate(self, requests: list[SearchRequest]) -> list[str]:
        conversations = [request_messages(r, self.topk, self.style) for r in requests]
        try:
            return ray.get(self._get_actor().generate.remote(conversations, self.max_tokens, self.temperature))
        except ray.exceptions.RayActorError:
            self._actor = None  # a dead actor is replaced on the next attempt
            raise

    def _search_batch(self, requests: list[SearchRequest]) -> list[SearchResult]:
        # One actor call for the whole batch, retried as a whole.
        replies = self._retrying(lambda: self._generate(requests), f"a batch of {len(requests)}")
        if replies is None:
            return [SearchResult(failed=True) for _ in requests]
        results = []
        for reply in replies:
            documents = parse_documents(reply, self.topk)
            results.append(SearchResult(documents=documents, failed=not documents))
        return results
