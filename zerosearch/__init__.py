"""The search agent built on the `verl` engine (multi-turn rollout, search backends, critic)."""
