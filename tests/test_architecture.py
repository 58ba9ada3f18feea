"""The package's shape, checked on its source: imports run one way, and each shared rule lives in one module.

    .venv/bin/python -m pytest tests/test_architecture.py -q

1. A stage imports only itself and earlier stages (and the ground floor): the ground floor (errors, paths, flags, _lazy,
   distributed) imports nothing else; then models, dictionary, data, training, evaluation, sweeps, features,
   circuits, viewer, cli. Every import counts, lazy ones and ``TYPE_CHECKING`` ones included.
2. The run-folder layout (file and folder names, ``layer_NN`` naming) is spelt only in ``dictionary/runs.py`` (and
   the dictionary's own two files in ``dictionary/io.py``); graph node ids only in ``circuits/graph_json.py``; the
   feature-spec grammar and the ``tcL[F]`` spelling only in ``circuits/specs.py``; softcapping and the final
   norm's use for logits only in ``models/adapters.py``; behaviour chosen by an activation's name only in
   ``dictionary/activations.py`` (and ``dictionary/interop.py``, which maps other tools' names onto ours).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "transcoders"
GROUND = {"errors", "paths", "flags", "distributed", "_lazy"}
STAGES = ["models", "dictionary", "data", "training", "evaluation", "sweeps", "features", "interp", "circuits", "viewer",
          "cli"]


def _level(part: str) -> int:
    if part in GROUND:
        return 0
    if part in STAGES:
        return 1 + STAGES.index(part)
    if part in ("__init__", "__main__"):
        return len(STAGES) + 1  # the package root and `python -m transcoders` sit on top
    raise AssertionError(f"src/transcoders/{part} is in no stage: add it to GROUND or STAGES in {__file__}")


def _modules() -> list[tuple[Path, str]]:
    """``(file, stage)`` for every module of the package; the stage is its top-level package or module name."""
    return [(p, p.relative_to(SRC).parts[0].removesuffix(".py")) for p in sorted(SRC.rglob("*.py"))]


def _imported_stages(path: Path) -> list[tuple[int, str]]:
    """``(line, stage)`` of every import of another part of the package in ``path``."""
    package = [SRC.name, *path.relative_to(SRC).parent.parts]  # e.g. ["transcoders", "circuits"]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (package[: len(package) - node.level + 1] if node.level else []) + (node.module or "").split(".")
            base = [b for b in base if b]
            names = [".".join(base + ([a.name] if len(base) == 1 else [])) for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == SRC.name and len(parts) > 1:
                out.append((node.lineno, parts[1]))
    return out


def test_imports_run_one_way():
    bad = []
    for path, stage in _modules():
        for line, other in _imported_stages(path):
            if other != stage and _level(other) >= _level(stage) and not (stage in GROUND and other in GROUND):
                bad.append(f"{path.relative_to(SRC.parent)}:{line}: {stage} imports {other}")
    assert not bad, "imports against the one-way order:\n" + "\n".join(bad)


def test_the_checker_sees_relative_absolute_and_lazy_imports(tmp_path, monkeypatch):
    """The check above must not pass vacuously: it finds every form of import it is meant to catch."""
    pkg = tmp_path / "transcoders" / "models"
    pkg.mkdir(parents=True)
    (pkg / "x.py").write_text("from ..circuits import api\nimport transcoders.viewer.data\n"
                              "def f():\n    from transcoders.cli import main\n    from . import hooks\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path / "transcoders")
    found = sorted(stage for _, stage in _imported_stages(pkg / "x.py"))
    assert found == ["circuits", "cli", "models", "viewer"]


# (rule, the one file allowed to spell it, regex)
RULES = [
    ("run-folder file names", {"dictionary/runs.py", "dictionary/io.py"},
     r"""["'](config\.json|weights\.safetensors|train_config\.json|train_log\.jsonl|checkpoint\.safetensors|"""
     r"""metrics\.json|features\.sqlite|sweep\.json|results\.csv|results\.md|pareto_\w+\.png)["']"""
     r"""|/ ["'](graphs|activations)["']|["'](graphs|activations)["']\)"""),
    ("layer_NN folder naming", {"dictionary/runs.py"}, r"""layer_\{[^}]*:02d\}|layer_\*/|["']layer_["']|layer_%02d"""),
    ("graph node ids", {"circuits/graph_json.py"},
     r"""\{[^{}]+\}_\{[^{}]+\}_\{[^{}]+\}|_-1_|split\(["']_["']\)|["']cross layer transcoder["']"""),
    ("feature-spec grammar and tcL[F] labels", {"circuits/specs.py"},
     r"""f["']tc\{|\(\?:tc|\(\\d\+\)\[:\\\[\]|\(\\d\+\):\(\\\*"""),
    ("softcap and final logits", {"models/adapters.py"}, r"""logit_softcap|final_norm\(\)\("""),
    # behaviour by activation name: the activation objects decide (interop maps other tools' names onto ours)
    ("branching on an activation's name", {"dictionary/activations.py", "dictionary/interop.py"},
     r"""\.activation\s*(==|!=|in\b)|\bact\s*==\s*["']"""),
]


@pytest.mark.parametrize("rule, owners, pattern", RULES, ids=[r[0] for r in RULES])
def test_each_rule_is_spelt_in_one_module(rule, owners, pattern):
    hits = []
    for path, _ in _modules():
        rel = path.relative_to(SRC).as_posix()
        if rel in owners:
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(pattern, line):
                hits.append(f"{rel}:{i}: {line.strip()}")
    assert not hits, f"{rule} outside {sorted(owners)}:\n" + "\n".join(hits)
    assert any(re.search(pattern, (SRC / o).read_text()) for o in owners), f"the pattern for {rule} matches nothing"
