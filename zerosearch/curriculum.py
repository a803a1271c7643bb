"""Noise curriculum of the simulated search engine.

At step i of m a simulated search returns noisy documents with probability
``p_i = p_s + (b^(i/m) - 1) / (b - 1) * (p_e - p_s)``: it starts at ``p_s``, ends at ``p_e``,
and for b > 1 rises slowly first and fast near the end. Each query is drawn on its own, from a
hash of (seed, step, key), so a draw does not depend on the batch it happens to be in.
"""

import hashlib
import json

from zerosearch.config import CurriculumConfig


def _check(start: float, end: float, base: float) -> None:
    if base <= 0 or base == 1:
        raise ValueError(f"search.curriculum.base={base} must be > 0 and != 1")
    for name, value in (("start_threshold", start), ("end_threshold", end)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"search.curriculum.{name}={value} is a probability and must lie in [0, 1]")


def noise_probability(step: int, total_steps: int, start: float, end: float, base: float = 4.0) -> float:
    """Probability of noisy documents at ``step`` of ``total_steps`` (step clipped to [0, total_steps])."""
    _check(start, end, base)
    if total_steps < 1:
        raise ValueError(f"total_steps={total_steps} must be >= 1")
    progress = min(max(step, 0), total_steps) / total_steps
    return start + (float(base**progress) - 1) / (base - 1) * (end - start)


def _uniform(seed: int, step: int, key: str) -> float:
    """A uniform in [0, 1) fixed by (seed, step, key); hashlib, since Python's hash() of a str is
    salted per process."""
    digest = hashlib.blake2b(json.dumps([int(seed), int(step), key]).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class NoiseSchedule:
    """Decides per query whether the simulator writes noisy (True) or useful (False) documents."""

    def __init__(self, config: CurriculumConfig, seed: int):
        _check(config.start_threshold, config.end_threshold, config.base)
        self.config = config
        self.seed = seed

    def probability(self, step: int, total_steps: int) -> float:
        c = self.config
        return noise_probability(step, total_steps, c.start_threshold, c.end_threshold, c.base)

    def draw(self, step: int, total_steps: int, keys: list[str]) -> list[bool]:
        """One draw per key; the same (seed, step, key) always gives the same answer. Keys must
        tell queries apart (e.g. sample uid and turn): equal keys get equal draws."""
        p = self.probability(step, total_steps)
        return [_uniform(self.seed, step, key) < p for key in keys]
