"""Every text the agent, the simulation LLM and the parser share: one place to read and change."""

import json
import re
from collections.abc import Sequence

SEARCH_STOPS = ["</search>", "</answer>"]
TOOL_CALL_STOPS = ["</tool_call>", "</answer>"]  # action_format=tool_call

# The search tool as the chat template declares it (action_format=tool_call), named and shaped as
# verl's search example has it: a list of queries, of which the first is searched.
SEARCH_TOOL_NAME = "search"
SEARCH_TOOL = {
    "type": "function",
    "function": {
        "name": SEARCH_TOOL_NAME,
        "description": "Searches the web for the queries and returns the most relevant documents.",
        "parameters": {
            "type": "object",
            "properties": {
                "query_list": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "The queries to search for; the first is searched.",
                }
            },
            "required": ["query_list"],
        },
    },
}

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
INVALID_TOOL_CALL_NOTICE = (
    "\nThat was not a valid action. To search, call the search tool with a query_list. "
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


# --- the critic LLM (the Critictor) -------------------------------------------------------------

CRITIQUE_OPEN = "\n<critique>"
CRITIQUE_CLOSE = "</critique>\n"
# Told to the policy only when the interactive critic is on (prepare data with --critiques).
CRITIQUES_SENTENCE = "After a search, a reviewer may comment between <critique> and </critique>.\n"


def with_critiques(instruction: str) -> str:
    """The instruction with the sentence that announces critiques, before the question."""
    head, sep, question = instruction.rpartition("Question:")
    return head + CRITIQUES_SENTENCE + sep + question if sep else instruction + CRITIQUES_SENTENCE


_TAG = re.compile(r"<\s*/?\s*[A-Za-z_|][^<>]{0,40}>")


def format_critique(text: str) -> str:
    """The block appended after a search: the critic's first line, with anything shaped like a tag
    taken out, so a critique can neither close its own block nor open an action or a chat turn."""
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return CRITIQUE_OPEN + _TAG.sub("", line).replace("<", "").replace(">", "").strip() + CRITIQUE_CLOSE


_GRADE = (
    "You review a search agent. It answered the question below by searching; judge each of its "
    "searches. A search is useful when its documents bring a fact the agent needs on the way to the "
    "correct answer (an intermediate fact of a multi-hop question counts) that no earlier search "
    "brought; a search that repeats an earlier one or brings nothing on the way is useless.\n"
    "Question: {question}\nCorrect answer: {answers}\n{path}\n{turns}\n"
    "Final answer: {final}\n\n"
    "Reply with one line per search, nothing else, exactly in this form:\n{form}"
)
_GRADE_PATH = "Facts on the way to it: {facts}\n"
_GRADE_TURN = 'Search {i}: reasoning "{thought}", query "{query}", documents:\n{documents}'
_CRITIQUE = (
    "You coach a search agent answering the question: {question}{answers}\n"
    'It reasoned "{thought}", searched for "{query}" and got:\n{documents}\n'
    "In one short line, tell it whether these documents help and what to do next."
)
# A tuned critic needs no instructions, only the fields it was tuned on.
_SFT_GRADE = "Question: {question}\nAnswer: {answers}\n{path}{turns}\nVerdicts:"
_SFT_GRADE_PATH = "Path: {facts}\n"
_SFT_GRADE_TURN = "Search {i}: {query}\n{documents}"
_SFT_CRITIQUE = "Question: {question}{answers}\nSearch: {query}\n{documents}\nCritique ({kind}):"
CRITIC_STYLES = ("prompt", "sft")

_CRITIQUE_VAGUE = (
    "You coach a search agent answering the question: {question}\n"
    'It searched for "{query}". In one short line, give a vague, general hint about searching; '
    "do not say whether these documents help."
)


def _check_style(style: str) -> None:
    if style not in CRITIC_STYLES:
        raise ValueError(f"critic prompt style must be one of {CRITIC_STYLES}, got {style!r}")


def format_facts(supporting: Sequence[Sequence[str]]) -> str:
    """Supporting facts in one line: each fact's phrases joined by " / ", facts by "; "."""
    return "; ".join(" / ".join(fact) for fact in supporting)


def grading_messages(
    question: str,
    golden_answers: Sequence[str],
    searches: Sequence[tuple[str, str, list[str]]],
    final_answer: str | None,
    style: str = "prompt",
    supporting: Sequence[Sequence[str]] = (),
) -> list[dict[str, str]]:
    """The retrospective critic's request for one trajectory: its question, the gold answers and
    the facts of the gold path where the data has them (privileged: the policy sees neither) and,
    per search, (reasoning, query, documents). Style ``prompt`` explains the task to an instruct
    model; ``sft`` gives a tuned critic only the question, the answers, the path and each query with
    its documents. Either way the reply is one "Search i: useful|useless | reason" line per search
    (``parse_verdicts``)."""
    _check_style(style)
    if style == "sft":
        turns = "\n".join(
            _SFT_GRADE_TURN.format(i=i + 1, query=query, documents=observation_body(documents))
            for i, (_, query, documents) in enumerate(searches)
        )
        path = _SFT_GRADE_PATH.format(facts=format_facts(supporting)) if supporting else ""
        text = _SFT_GRADE.format(question=question.strip(), answers="; ".join(golden_answers), path=path, turns=turns)
        return [{"role": "user", "content": text}]
    turns = "\n".join(
        _GRADE_TURN.format(i=i + 1, thought=thought, query=query, documents=observation_body(documents))
        for i, (thought, query, documents) in enumerate(searches)
    )
    form = "\n".join(f"Search {i + 1}: useful|useless | one-line reason" for i in range(len(searches)))
    text = _GRADE.format(
        question=question.strip(),
        answers="; ".join(golden_answers),
        path=_GRADE_PATH.format(facts=format_facts(supporting)) if supporting else "",
        turns=turns,
        final=final_answer if final_answer is not None else "(none)",
        form=form,
    )
    return [{"role": "user", "content": text}]


def critique_messages(
    question: str,
    thought: str,
    query: str,
    documents: list[str],
    vague: bool,
    golden_answers: Sequence[str] | None = None,
    style: str = "prompt",
) -> list[dict[str, str]]:
    """The interactive critic's request after one search. The gold answers are included only when
    given (``critictor.interactive.privileged``)."""
    _check_style(style)
    if style == "sft":
        text = _SFT_CRITIQUE.format(
            question=question.strip(),
            answers=f"\nAnswer: {'; '.join(golden_answers)}" if golden_answers else "",
            query=query,
            documents=observation_body(documents),
            kind="vague" if vague else "clear",
        )
        return [{"role": "user", "content": text}]
    answers = f" (correct answer: {'; '.join(golden_answers)})" if golden_answers else ""
    template = _CRITIQUE_VAGUE if vague else _CRITIQUE
    text = template.format(
        question=question.strip(), answers=answers, thought=thought, query=query, documents=observation_body(documents)
    )
    return [{"role": "user", "content": text}]


# One verdict line, after markdown emphasis is taken out: "Search 1: useful | reason",
# "search 1 - Useless.", "1. useful: reason", "- Search #2) not useful"...
_VERDICT = re.compile(
    r"^\s*(?:[-+•]\s+)?(?:search|query)?\s*#?\s*(\d+)\s*[:.)\-–—]?\s*(useful|useless|not\s+useful)\b"
    r"[\s.,;:!|\-–—]*(.*?)\s*$",
    re.IGNORECASE,
)
_EMPHASIS = re.compile(r"[*_`#]+")
_VERDICT_WORDS = {"useful": True, "useless": False, "not useful": False}


def _verdict(word: object) -> bool | None:
    return _VERDICT_WORDS.get(" ".join(str(word).lower().split()).strip(" ."))


def _json_verdicts(text: str) -> list[tuple[int, bool, str]] | None:
    """Verdicts written as JSON: {"1": "useful", ...}, ["useful", ...], [{"search": 1, "verdict":
    "useful", "reason": "..."}, ...], or any of these under a "verdicts" key; None if not JSON."""
    body = text.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    if not body.startswith(("{", "[")):
        return None
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return None
    if isinstance(data, dict) and "verdicts" in data:
        data = data["verdicts"]
    if isinstance(data, dict):
        items = [(k, v, "") for k, v in data.items()]
    elif isinstance(data, list):
        items = [
            (v.get("search", i + 1), v.get("verdict"), v.get("reason", "")) if isinstance(v, dict) else (i + 1, v, "")
            for i, v in enumerate(data)
        ]
    else:
        return None
    verdicts = []
    for number, word, reason in items:
        useful = _verdict(word)
        if useful is None or not str(number).strip().isdigit():
            return []  # JSON, but not verdicts: unreadable
        verdicts.append((int(str(number).strip()), useful, str(reason or "").strip()))
    return verdicts


def parse_verdicts(text: str, searches: int) -> list[tuple[bool, str]] | None:
    """(useful, reason) for each of ``searches`` searches, numbered 1..n in order. Lines such as
    "Search i: useful | reason" in any case, with markdown emphasis, "-" or ")" for the colon,
    "not useful" for useless, or a numbered list; or one JSON object or list. Other lines are
    ignored. None when any search is missing, repeated or out of order: a reply that cannot be read
    gives no turn reward (and is counted), never a guess."""
    verdicts = _json_verdicts(text)
    if verdicts is None:
        verdicts = []
        for line in text.splitlines():
            match = _VERDICT.match(_EMPHASIS.sub("", line))
            if match:
                useful = _verdict(match.group(2))
                verdicts.append((int(match.group(1)), bool(useful), match.group(3).strip()))
    if [number for number, _, _ in verdicts] != list(range(1, searches + 1)):
        return None
    return [(useful, reason) for _, useful, reason in verdicts]


def format_verdicts(verdicts: Sequence[tuple[bool, str]]) -> str:
    """Verdicts as the critic writes them, e.g. to tune one: the inverse of ``parse_verdicts``."""
    return "\n".join(
        f"Search {i + 1}: {'useful' if useful else 'useless'}" + (f" | {reason}" if reason else "")
        for i, (useful, reason) in enumerate(verdicts)
    )
