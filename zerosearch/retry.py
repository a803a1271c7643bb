"""Bounded retries with exponential backoff and deadlines, shared by every remote call the agent
makes: search backends, the simulation LLM and the critic LLM. A call never retries forever, never
waits past its deadlines, and never raises once its attempts are spent: the caller gets None and
counts a failure.

Two deadlines bound a remote call: one per attempt (``timeout_s``, first byte sent to last byte
read: a server that trickles its reply a byte at a time is cut off like one that never answers),
and one per batch (``batch_timeout_s``: no attempt starts, and none is waited for, past it)."""

import logging
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from verl.utils.config import ConfigSection, option

logger = logging.getLogger(__name__)
T = TypeVar("T")


def redact(message: str, secret: str = "") -> str:
    """``message`` without ``secret`` and without anything shaped like a key in a URL or header:
    servers and clients quote requests in their errors, and errors reach logs."""
    if secret:
        message = message.replace(secret, "***")
    message = re.sub(r"(api_key=)[^&\s]+", r"\1***", message)
    return re.sub(r"(Bearer\s+)\S+", r"\1***", message)


@dataclass
class RetryConfig(ConfigSection):
    """How every call to one kind of server is bounded; nested as ``search.retry`` and
    ``critictor.retry``. Local work (an in-process model, the corpus) runs ``without_deadlines``."""

    concurrency: int = option(16, "Requests in flight per batch.", min=1)
    timeout_s: float | None = option(
        60.0,
        "Seconds one attempt at a request to a server may take, first byte sent to last byte read; then it is "
        "retried. In-process models and the corpus have no deadline.",
        nullable=True,
        min=0,
    )
    batch_timeout_s: float | None = option(
        300.0,
        "Seconds one batch of requests may take, retries included: no attempt starts or is waited for past it, "
        "and unfinished requests give nothing (no documents, no verdicts) and are counted. null: no batch deadline.",
        nullable=True,
        min=0,
    )
    max_retries: int = option(
        3,
        "Retries after the first attempt (a reply the caller cannot read is retried too); then the request "
        "gives nothing and is counted.",
        min=0,
    )
    backoff_s: float = option(1.0, "Seconds before the first retry, doubled for each next one.", min=0)
    cooldown_after: int = option(
        3, "With several servers, one that failed this many attempts in a row is skipped for cooldown_s.", min=1
    )
    cooldown_s: float = option(
        30.0,
        "Seconds a failing server is skipped while the others carry the load (all skipped: the soonest back).",
        min=0,
    )

    def without_deadlines(self) -> "RetryConfig":
        """The same bounds on retries, no deadline: for work done here, which cannot hang on a peer."""
        return replace(self, timeout_s=None, batch_timeout_s=None)

    def batch_deadline(self) -> float:
        """The ``time.monotonic()`` past which a batch started now waits for nothing."""
        return math.inf if self.batch_timeout_s is None else time.monotonic() + self.batch_timeout_s

    def attempt_seconds(self, deadline: float) -> float:
        """How long an attempt starting now may take: its own deadline or the batch's, the sooner."""
        return min(math.inf if self.timeout_s is None else self.timeout_s, deadline - time.monotonic())


class DeadlineExceeded(TimeoutError):
    """An attempt that did not finish in time."""


def within(call: Callable[[], T], seconds: float) -> T:
    """``call()``'s value, or DeadlineExceeded once ``seconds`` have passed. The call runs on a
    daemon thread that is left behind at the deadline: client timeouts apply per read, so only a
    thread of our own bounds a reply that keeps trickling in. ``seconds`` inf: called directly."""
    if seconds == math.inf:
        return call()
    if seconds <= 0:
        raise DeadlineExceeded("the batch deadline has passed")
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as e:  # handed to the waiting thread as is
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True, name="deadline-call")
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise DeadlineExceeded(f"no complete reply within {seconds:.1f} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def retrying(
    attempt: Callable[[], T],
    retry: RetryConfig,
    stats: Counter[str],
    lock: threading.Lock,
    what: str,
    deadline: float = math.inf,
) -> T | None:
    """``attempt()``'s value, trying again after any exception until the policy is spent or the
    batch ``deadline`` (a ``time.monotonic()``) is near; then None (logged, never raised). Retries
    are counted in ``stats["retries"]``, attempts cut off by a deadline in ``stats["timeouts"]``.
    ``attempt`` enforces its own deadline (``within``): it alone knows which server it was on."""
    delay = retry.backoff_s
    for tries in range(1, retry.max_retries + 2):
        try:
            return attempt()
        except Exception as e:  # any failure of a remote call is retried, then counted by the caller
            with lock:
                stats["timeouts"] += isinstance(e, DeadlineExceeded)
            if tries > retry.max_retries or time.monotonic() + delay >= deadline:
                logger.warning("%s failed after %d attempts: %s", what, tries, e)
                return None
            with lock:
                stats["retries"] += 1
            time.sleep(delay)
            delay *= 2
    return None
