"""The search backends' names, apart from their code, so that the config can list them."""

SIMULATED_MODES = ("simulate_prompt", "simulate_sft")
REAL_ENGINES = ("google", "wiki", "corpus")
CLOSED_BOOK = "none"  # every search returns no documents: what the policy answers from memory alone
EVAL_ENGINES = REAL_ENGINES + (CLOSED_BOOK,)
BACKENDS = SIMULATED_MODES + EVAL_ENGINES
