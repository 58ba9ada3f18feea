"""The explainer's and the scorer's prompts, after the published automated-interpretability pipelines (Bills et
al. 2023; EleutherAI's delphi, Paulo et al. 2024): activating tokens marked ``<<like this>>``, a one-line
explanation, then yes/no questions about held-out text. Kept short: on a CPU every prompt token costs time."""

from __future__ import annotations

EXPLAIN_SYSTEM = (
    "You are an interpretability researcher studying one feature (a neuron) of a language model. You will see short "
    "text excerpts where it fires; the tokens where it fires are marked <<like this>>, with its strength from 0 to 9 "
    "after them. Say in one short line (at most 15 words) what the feature detects: a specific token, a word sense, "
    "a topic, a grammatical role or a pattern. Be as specific as the examples allow. Reply with the explanation only."
)


def explain_user(examples: list[str]) -> str:
    lines = "\n".join(f"{i}. {e}" for i, e in enumerate(examples, start=1))
    return f"Excerpts:\n{lines}\n\nWhat does the feature detect?"


def clean_explanation(reply: str) -> str:
    """The first non-empty line, without a leading 'Explanation:' or quotes."""
    line = next((ln.strip() for ln in reply.splitlines() if ln.strip()), "")
    for lead in ("explanation:", "the feature detects:", "answer:"):
        if line.lower().startswith(lead):
            line = line[len(lead):].strip()
    return line.strip("\"'` ")[:300]


SCORE_SYSTEM = "You judge whether a description of a language-model feature fits a piece of text. Answer Yes or No."


def detection_prefix(explanation: str) -> str:
    return (f"Feature description: {explanation}\n\nDoes this feature fire on some token of the text below? "
            "Answer Yes or No.\n\nText: ")


def fuzzing_prefix(explanation: str) -> str:
    return (f"Feature description: {explanation}\n\nIn the text below some tokens are marked <<like this>>. Are the "
            "marked tokens the ones this feature fires on? Answer Yes or No.\n\nText: ")
