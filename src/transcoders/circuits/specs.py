"""How a transcoder feature is written, everywhere: on the command line (``--feature``, ``--target``, ``--zero``,
``--clamp``, ``--scale``, ``--patch``) and in what is printed.

    FEATURE := [tc] LAYER ":" INDEX [ "@" POS ]      e.g. 8:123, 8:123@-1
             | [tc] LAYER "[" INDEX "]" [ "@" POS ]  e.g. tc8[123], tc8[123]@5 (how features are printed)
    INDEX   := a number, or "*" (every feature of the layer) where a command allows it
    POS     := a token position; negative counts from the end (@-1 is the last token)

Interventions add an operand: ``=VALUE`` (clamp) or ``*FACTOR`` (scale). Features are printed as ``tc8[123]@5``,
which reads back as the same feature.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import CircuitError

_FEATURE = re.compile(r"(?:tc|mlp)?(\d+)(?::(\*|\d+)|\[(\*|\d+)\])(?:@(-?\d+))?")
_NUMBER = r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
SYNTAX = "LAYER:FEATURE[@POS] (e.g. 8:123@-1, or tc8[123]@-1)"


@dataclass(frozen=True)
class FeatureSpec:
    """A feature as written: ``feature`` None means every feature of the layer, ``pos`` None means no position
    was given (the command's default: the last token for targets, every token for edits)."""

    layer: int
    feature: int | None
    pos: int | None = None

    def __str__(self) -> str:
        return feature_label(self.layer, self.feature, self.pos)


def feature_label(layer: int, feature: int | None, pos: int | None = None) -> str:
    """``tc8[123]@5``: how a feature is printed (and read back by :func:`parse_feature`)."""
    return f"tc{layer}[{'*' if feature is None else feature}]" + ("" if pos is None else f"@{pos}")


def parse_feature(text: str, *, flag: str = "--feature", wildcard: bool = False, position: bool = True) -> FeatureSpec:
    """Read ``text`` per the module's grammar. ``wildcard`` allows ``L:*``; ``position`` allows ``@POS``."""
    m = _FEATURE.fullmatch(text.strip())
    if m is None:
        raise CircuitError(f"cannot read {flag} {text!r}: write a feature as {SYNTAX}")
    layer, a, b, pos = m.groups()
    index = a if a is not None else b
    if index == "*" and not wildcard:
        raise CircuitError(f"{flag} {text}: name one feature (LAYER:FEATURE), not a whole layer")
    if pos is not None and not position:
        raise CircuitError(f"{flag} {text}: takes no position; drop @{pos}")
    return FeatureSpec(int(layer), None if index == "*" else int(index), None if pos is None else int(pos))


def parse_edit_spec(text: str, op: str) -> tuple[FeatureSpec, float | None]:
    """An intervention's feature and operand: ``--zero F``, ``--patch F``, ``--clamp F=VALUE``, ``--scale F*FACTOR``."""
    flag = f"--{op}"
    need = {"clamp": "=", "scale": "*"}.get(op)
    m = re.fullmatch(rf"(.+?)([=*])({_NUMBER})", text.strip())
    if m is not None and not m.group(1).endswith((":", "[")):  # a trailing operand (not the '*' of L:*)
        feature, sym, number = m.groups()
        if need != sym:
            if need is None:
                raise CircuitError(f"{flag} {text}: {op} takes no value; drop {sym}{number}")
            raise CircuitError(f"{flag} {text}: write {op} edits as {SYNTAX}{need}{_operand(op)}")
        return parse_feature(feature, flag=flag, wildcard=True), float(number)
    if need is not None:
        raise CircuitError(f"{flag} {text}: write {op} edits as {SYNTAX}{need}{_operand(op)}")
    return parse_feature(text, flag=flag, wildcard=True), None


def _operand(op: str) -> str:
    return "VALUE" if op == "clamp" else "FACTOR"
