"""Lazy package exports (PEP 562): a package lists what it exports and from which submodule, and the submodule is
imported on first use.

This is what keeps ``transcoders --help`` and argument errors free of torch and transformers: the command line
builds its parser from configuration modules (``training.config``, ``evaluation.config``, ...) that import
neither, and importing one of them runs its package's ``__init__``, which must therefore import nothing heavy.
A package's ``__init__`` also imports the same names under ``TYPE_CHECKING`` so that type checkers and editors
see them. No exported name may equal a submodule's name (importing the submodule would replace the export).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable


def lazy_exports(package: str, table: dict[str, tuple[str, ...]]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, given ``{".submodule": ("Name", ...)}``."""
    where = {name: module for module, names in table.items() for name in names}

    def __getattr__(name: str) -> object:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name], package), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return __getattr__, __dir__
