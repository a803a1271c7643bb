"""Bounded retries with exponential backoff, shared by every remote call the agent makes: search
backends, the simulation LLM and the critic LLM. A call never retries forever, and never raises
once its attempts are spent: the caller gets None and counts a failure."""

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

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
class RetryPolicy:
    concurrency: int = 16  # requests in flight
    max_retries: int = 3  # attempts after the first
    backoff_s: float = 1.0  # delay before the first retry, doubled for each next one


def retrying(
    attempt: Callable[[], T], retry: RetryPolicy, stats: Counter[str], lock: threading.Lock, what: str
) -> T | None:
    """``attempt()``'s value, trying again after any exception until the policy is spent; then None
    (logged, never raised). Retries are counted in ``stats["retries"]``."""
    delay = retry.backoff_s
    for tries in range(1, retry.max_retries + 2):
        try:
            return attempt()
        except Exception as e:  # any failure of a remote call is retried, then counted by the caller
            if tries > retry.max_retries:
                logger.warning("%s failed after %d attempts: %s", what, tries, e)
                return None
            with lock:
                stats["retries"] += 1
            time.sleep(delay)
            delay *= 2
    return None
