"""The command line starts without torch: `--help` of every command and argument errors import neither torch nor
transformers (that is what makes them take ~0.1 s instead of ~6 s; bench/cli_startup.py has the times), and the
packages' lazy exports all resolve."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import transcoders

HEAVY = ("torch", "transformers", "numpy", "safetensors")

# In a fresh interpreter: run the command line on each argv, in-process, and report its exit code, what it
# printed and which heavy modules it imported.
PROBE = """
import contextlib, io, json, sys
from transcoders.cli import main
argv = json.loads(sys.argv[1])
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
heavy = [m for m in HEAVY if m in sys.modules]
print(json.dumps({"code": code, "out": out.getvalue(), "err": err.getvalue(), "heavy": heavy}))
""".replace("HEAVY", repr(HEAVY))


def _probe(argv: list[str]) -> dict:
    res = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _commands() -> list[str]:
    from transcoders.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return list(sub.choices)


def test_the_commands_are_all_there():
    assert {"train", "eval", "sweep", "tune", "export", "import", "features", "interp", "concepts", "serve", "models",
            "circuit", "connections", "intervene"} <= set(_commands())


@pytest.mark.parametrize("argv", [["--help"]] + [[c, "--help"] for c in _commands()], ids=" ".join)
def test_help_imports_nothing_heavy(argv):
    r = _probe(argv)
    assert r["code"] == 0 and "usage: transcoders" in r["out"]
    assert r["heavy"] == [], f"`transcoders {' '.join(argv)}` imported {r['heavy']}"


@pytest.mark.parametrize("argv, says", [
    (["eval"], "the following arguments are required: RUN"),
    (["train", "--layers", "six", "--out", "/nonexistent/x"], "cannot read --layers 'six'"),
    (["train", "--activation", "gelu"], "invalid choice: 'gelu'"),
    (["tune", "--layers", "6", "--out", "/nonexistent/x"], "give exactly one target"),
    (["tune", "--layers", "6", "--target-ce-recovered", "1.2"], "out of reach"),
    (["export", "runs/x", "--to", "onnx", "out"], "invalid choice: 'onnx'"),
    (["circuit", "--prompt", "hi"], "--set"),
])
def test_argument_errors_are_one_line_and_import_nothing_heavy(argv, says):
    r = _probe(argv)
    assert r["code"] not in (0, None)
    last = r["err"].strip().splitlines()[-1]
    assert says in last and "Traceback" not in r["err"]
    assert r["heavy"] == [], f"`transcoders {' '.join(argv)}` imported {r['heavy']} before saying {last!r}"


def _lazy_packages() -> list[str]:
    root = Path(transcoders.__file__).parent
    return [f"transcoders.{p.parent.name}" for p in sorted(root.glob("*/__init__.py"))
            if "lazy_exports" in p.read_text()]


@pytest.mark.parametrize("name", _lazy_packages())
def test_every_lazy_export_resolves_and_none_shadows_a_submodule(name):
    pkg = importlib.import_module(name)
    root = Path(pkg.__file__).parent
    submodules = {p.stem for p in root.glob("*.py")} | {p.name for p in root.iterdir() if (p / "__init__.py").is_file()}
    for export in pkg.__all__:
        assert export not in submodules, f"{name}.{export} is also a submodule: importing it would replace the export"
        value = getattr(pkg, export)
        assert not isinstance(value, type(pkg)), f"{name}.{export} resolved to a module"
        assert export in dir(pkg)
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        pkg.nothing_here  # noqa: B018


def test_the_torch_free_activation_table_matches_the_classes():
    from transcoders.dictionary.activations import ACTIVATIONS
    from transcoders.dictionary.names import DEFAULT_PENALTIES

    assert list(DEFAULT_PENALTIES) == list(ACTIVATIONS)
    assert {n: a.default_penalty for n, a in ACTIVATIONS.items()} == DEFAULT_PENALTIES


def test_a_terminal_is_told_what_is_loading_from_the_first_moment(tmp_path):
    """On a terminal a command says it is loading torch before the import (seconds) starts, and erases the line
    once it is done, so the one-line error that follows stands alone; through a pipe it prints nothing extra."""
    import os
    import pty

    argv = [sys.executable, "-m", "transcoders", "eval", str(tmp_path / "no-such-run")]
    main_fd, child_fd = pty.openpty()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=child_fd, stderr=child_fd, close_fds=True)
    os.close(child_fd)
    seen = b""
    while True:
        try:
            chunk = os.read(main_fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    proc.wait(timeout=120)
    os.close(main_fd)
    text = seen.decode()
    assert text.startswith("transcoders eval: loading torch and transformers...\r\x1b[K"), text
    assert text.split("\x1b[K", 1)[1].strip().startswith("error:") and proc.returncode != 0
    piped = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert "loading" not in piped.stderr and piped.stderr.strip().startswith("error:")
