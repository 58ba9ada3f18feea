"""Config dataclasses whose fields are command-line flags.

Every task takes one config dataclass (``TrainConfig``, ``EvalConfig``, ``FeaturesConfig``, ``CircuitConfig``, ...).
Its fields, declared with :func:`opt`, carry their help text, so the CLI is generated from them
(:func:`add_dataclass_args`) and turned back into the dataclass (:func:`config_from`): a default lives in one place,
and the Python API and the command line cannot drift apart.

A ground-floor module: every stage uses it, it imports nothing from the package.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, Field, field, fields
from typing import Any, TypeVar

T = TypeVar("T")


def opt(default: Any, help: str, **metadata: Any) -> Any:
    """A dataclass field whose ``help`` becomes the CLI flag's help text. ``metadata`` may add ``choices`` or
    ``required=True`` (a string flag the parser insists on)."""
    return field(default=default, metadata={"help": help, **metadata})


def _flag(f: Field) -> str:
    return "--" + f.name.replace("_", "-")


def add_dataclass_args(p: argparse.ArgumentParser, cls: type, skip: frozenset[str] | set[str] = frozenset()) -> None:
    """One ``--flag`` per dataclass field, with its type, default and help (booleans are ``store_true``)."""
    for f in fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not MISSING else None
        help_text = f.metadata.get("help", "")
        if isinstance(default, bool):
            p.add_argument(_flag(f), action="store_true", dest=f.name, help=help_text)
            continue
        if f.metadata.get("required"):
            p.add_argument(_flag(f), type=str, dest=f.name, required=True, help=help_text)
            continue
        kw: dict[str, Any] = {"default": default, "help": f"{help_text} (default: %(default)s)"}
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        p.add_argument(_flag(f), type=type(default) if default is not None else str, dest=f.name, **kw)


def config_from(ns: argparse.Namespace, cls: type[T], skip: frozenset[str] | set[str] = frozenset()) -> T:
    """The dataclass ``cls`` filled from the flags :func:`add_dataclass_args` made for it."""
    return cls(**{f.name: getattr(ns, f.name) for f in fields(cls) if f.name not in skip})  # type: ignore[arg-type]
