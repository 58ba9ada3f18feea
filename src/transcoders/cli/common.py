"""What every subcommand's parser shares: one call declares a command (help, description, examples, handler)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence


def add_command(sub: argparse._SubParsersAction, name: str, *, help: str, description: str,
                func: Callable[[argparse.Namespace], int], examples: Sequence[str] = (),
                epilog: str | None = None) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` shows ``description`` and its examples, run by ``func(namespace)``."""
    if epilog is None and examples:
        epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples)
    p = sub.add_parser(name, help=help, description=description, epilog=epilog,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=func)
    return p


def add_quiet(p: argparse.ArgumentParser, what: str = "no progress bar") -> None:
    p.add_argument("--quiet", action="store_true", help=what)
