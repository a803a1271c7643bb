"""Every text the agent, the simulation LLM and the parser share: one place to read and change."""

import re
from collections.abc import Sequence

SEARCH_STOPS = ["</search>", "</answer>"]

POLICY_INSTRUCTION = (
    "Answer the question below. Reason inside <think> and </think> each time you receive new "
    "information. When you need a fact you do not know, search for it by writing "
    "<search> your query </search>; the results come back between <information> and "
    "</information>. You may search as often as you need. When you are ready, give only the final "
    "answer, a short phrase without explanation, between <answer> and </answer>.\n"
    "Question: {question}\n"
)

INVALID_ACTION_NOTICE = (
    "\nThat was not a valid action. To search, put the query between <search> and </search>. "
    "To answer, put the answer between <answer> and </answer>.\n"
)


# For a policy that learns the tag protocol from supervised turns, not from reading instructions:
# it halves the length of every sequence a tiny model trains on.
BRIEF_POLICY_INSTRUCTION = (
    "Search with <search> query </search> if needed, then answer with <answer> answer </answer>.\n"
    "Question: {question}\n"
)
POLICY_INSTRUCTIONS = {"full": POLICY_INSTRUCTION, "brief": BRIEF_POLICY_INSTRUCTION}


def policy_prompt(question: str, instruction: str = POLICY_INSTRUCTION) -> str:
    return instruction.format(question=question.strip())


OBSERVATION_OPEN = "\n\n<information>"
OBSERVATION_CLOSE = "</information>\n\n"


def observation_body(documents: list[str]) -> str:
    return "\n".join(f"Doc {i + 1}: {doc.strip()}" for i, doc in enumerate(documents)) or "No results."


def format_observation(documents: list[str]) -> str:
    """The block appended to the context after a search."""
    return OBSERVATION_OPEN + observation_body(documents) + OBSERVATION_CLOSE


# --- the simulation LLM -----------------------------------------------------------------------

_PROMPT_USEFUL = (
    "You play a web search engine. For the search query below, write {k} short documents of about "
    "30 words each, as a search engine would return them. The person searching wants to answer the "
    'question "{question}"; its correct answer is "{answers}". Make the documents useful: at '
    "least one must state the correct answer plainly and naturally.\n\n"
    "Query: {query}\n\n"
    'Reply with exactly {k} documents, one per line, each starting with "Doc N:".'
)

_PROMPT_NOISY = (
    "You play a web search engine. For the search query below, write {k} short documents of about "
    "30 words each, as a search engine would return them. Make them noisy: on the query's topic, "
    "but about related entities, side details or plausible confusions, so that they do not answer "
    "what the query is after.\n\n"
    "Query: {query}\n\n"
    'Reply with exactly {k} documents, one per line, each starting with "Doc N:".'
)

# The fine-tuned simulator needs no instructions, only the fields it was tuned on.
_SFT_USEFUL = "Query: {query}\nQuestion: {question}\nAnswer: {answers}\nDocuments ({k}, useful):"
_SFT_NOISY = "Query: {query}\nDocuments ({k}, noisy):"


def simulator_messages(
    query: str, question: str, golden_answers: Sequence[str], noisy: bool, topk: int, style: str
) -> list[dict[str, str]]:
    """Chat messages asking the simulation LLM for `topk` documents. A noisy request carries
    neither the question nor its answer, so the simulator cannot leak them."""
    templates = {"prompt": (_PROMPT_USEFUL, _PROMPT_NOISY), "sft": (_SFT_USEFUL, _SFT_NOISY)}
    if style not in templates:
        raise ValueError(f"simulator prompt style must be 'prompt' or 'sft', got {style!r}")
    useful, noisy_template = templates[style]
    template = noisy_template if noisy else useful
    text = template.format(
        query=query.strip(), question=question.strip(), answers="; ".join(str(a) for a in golden_answers), k=topk
    )
    return [{"role": "user", "content": text}]


# "Doc 3:" marks, or a short numbered list ("3. ", "3) "); a year opening a line is not a mark.
_DOC_MARK = re.compile(r"(?im)^\s*(?:doc(?:ument)?\s*\d+\s*[:.)-]|\d{1,2}[.)]\s)")


def parse_documents(text: str, topk: int) -> list[str]:
    """Splits a simulator reply into at most `topk` non-empty documents. Replies without
    "Doc N:" marks fall back to one document per non-empty line."""
    parts = _DOC_MARK.split(text)
    if len(parts) > 1:
        docs = [p.strip() for p in parts[1:]]
    else:
        docs = [line.strip() for line in text.splitlines()]
    return [d for d in docs if d][:topk]
