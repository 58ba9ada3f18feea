"""What every subcommand's parser shares: one call declares a command (help, description, examples, handler)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager


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


def quiet_hf() -> None:
    """Silence Hugging Face's own progress bars (ours say what is happening; theirs would garble one-line errors)
    and the hub client's retry logs (the final error says it in one line). Through the environment, which both
    libraries read when they are imported, so the command line need not import them first; directly where they
    already are (the command run in-process)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_VERBOSITY", "error")
    if "transformers" in sys.modules:
        from huggingface_hub.utils import logging as hub_logging
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hub_logging.set_verbosity_error()


@contextmanager
def loading(ns: argparse.Namespace) -> Iterator[None]:
    """Around a command's heavy imports (torch, transformers: seconds): on a terminal, a status line that says so
    from the first moment, erased when they are done (so a bar or a one-line error follows on a clean line)."""
    show = sys.stderr.isatty() and not getattr(ns, "quiet", False) and os.environ.get("RANK", "0") == "0"
    if show:
        sys.stderr.write(f"transcoders {ns.command}: loading torch and transformers...")
        sys.stderr.flush()
    try:
        yield
    finally:
        if show:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
