"""docs/cli.md is the real `--help` of every command (regenerate it with `docs/update_cli_reference.py`)."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "update_cli_reference.py"


def test_the_cli_reference_is_up_to_date():
    spec = importlib.util.spec_from_file_location("update_cli_reference", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    text = mod.render()
    commands = mod.commands()[1:]
    assert {"train", "interp", "concepts", "serve"} <= set(commands)  # read from the parser, so none is left out
    for command in commands:  # every command is there, with its own usage line
        assert f"$ transcoders {command} --help\nusage: transcoders {command} " in text
    assert mod.CLI_MD.read_text() == text, "docs/cli.md is out of date: run .venv/bin/python docs/update_cli_reference.py"
