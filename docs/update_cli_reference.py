"""Rewrite the README's "CLI reference" section from the real `--help` output of every command.

    .venv/bin/python docs/update_cli_reference.py
"""

import os
import subprocess
from pathlib import Path

COMMANDS = ["", "train", "eval", "sweep", "export", "import", "features", "serve", "circuit", "connections", "intervene"]
root = Path(__file__).resolve().parent.parent
env = dict(os.environ, COLUMNS="100")
blocks = []
for c in COMMANDS:
    args = [str(root / ".venv/bin/transcoders")] + ([c] if c else []) + ["--help"]
    out = subprocess.run(args, capture_output=True, text=True, env=env, check=True).stdout.rstrip()
    blocks.append("```\n$ transcoders " + (c + " " if c else "") + "--help\n" + out + "\n```")
body = "## CLI reference\n\nEvery command has `--help`; this is its output.\n\n" + "\n\n".join(blocks) + "\n\n"
readme = root / "README.md"
s = readme.read_text()
a, b = s.index("## CLI reference"), s.index("## How it works")
readme.write_text(s[:a] + body + s[b:])
