"""The explainer's and the scorer's prompts, after the published automated-interpretability pipelines (Bills et
al. 2023; EleutherAI's delphi, Paulo et al. 2024): activating tokens marked ``<<like this>>``, a one-line
explanation, then yes/no questions about held-out text. Kept short: on a CPU every prompt token costs time."""

from __future__ import annotations

from collections.abc import Sequence

EXPLAIN_SYSTEM = (
    "You are an interpretability researcher. A feature of a language model fires on some tokens of a text. You get "
    "excerpts where it fires: the tokens where it fires are marked <<like this>>, with its strength from 0 to 9 after "
    "them. Write one short line (at most 15 words) saying what the feature detects, as specifically as the excerpts "
    "allow. When the marked tokens are mostly one word, start with that word in quotes, then say in what context. "
    "Reply with the explanation only."
)
# worked examples, given as earlier turns of the conversation (small models copy an example inside the instructions)
EXPLAIN_SHOTS = [
    ("Excerpts:\n1. prices of crude <<oil>>(9) rose again\n2. the <<oil>>(8) and gas industry\n"
     "3. an <<oil>>(5) painting of the harbour\n4. the <<petrol>>(3) price\nTokens where it fires most: \"oil\" (3), "
     "\"petrol\" (1)\nExplanation:", '"oil" (and petrol), mostly as a fuel in economic news'),
]


def explain_user(examples: list[str], top_tokens: Sequence[tuple[str, int]] = ()) -> str:
    lines = "\n".join(f"{i}. {e}" for i, e in enumerate(examples, start=1))
    tokens = ", ".join(f"{t.strip()!r} ({n})".replace("'", '"') for t, n in top_tokens)
    return f"Excerpts:\n{lines}\n" + (f"Tokens where it fires most: {tokens}\n" if tokens else "") + "Explanation:"


def clean_explanation(reply: str) -> str:
    """The first non-empty line, without a leading 'Explanation:' or quotes."""
    line = next((ln.strip() for ln in reply.splitlines() if ln.strip()), "")
    for lead in ("explanation:", "the feature detects:", "answer:"):
        if line.lower().startswith(lead):
            line = line[len(lead):].strip()
    line = line.strip()
    if len(line) > 1 and line[0] == line[-1] and line[0] in "\"'`":  # a whole line in quotes
        line = line[1:-1].strip()
    return line[:300]


SCORE_SYSTEM = "You judge whether a description of a language-model feature fits a piece of text. Answer Yes or No."


def detection_prefix(explanation: str) -> str:
    return (f"Feature description: {explanation}\n\nDoes this feature fire on some token of the text below? "
            "Answer Yes or No.\n\nText: ")


def fuzzing_prefix(explanation: str) -> str:
    return (f"Feature description: {explanation}\n\nIn the text below some tokens are marked <<like this>>. Are the "
            "marked tokens the ones this feature fires on? Answer Yes or No.\n\nText: ")
