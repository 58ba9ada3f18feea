"""The peers' own virtual environments: the released SAELens and circuit-tracer, with what they pin, installed
once and cached, so that our exports are checked by the tools themselves rather than by our reading of them.

    .venv/bin/python peers/envs.py [saelens|circuit-tracer ...]   # build (or reuse) the environments, print paths

Each environment lives in ``$TRANSCODERS_PEERS`` (default: ``~/.cache/transcoders/peers``) under a name that
hashes its requirements, so changing a pin builds a new one; a marker file written last says it is complete.
torch is pinned to the CPU build this project uses (an unpinned torch pulls a multi-GB CUDA build).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TORCH = "torch==2.13.0"
PEERS: dict[str, list[str]] = {
    # SAELens as released; it brings transformer-lens and a current transformers
    "saelens": [TORCH, "sae-lens==6.54.12"],
    # circuit-tracer 0.5.0 pins transformers<=4.57.3; nnsight newer than 0.6.3 breaks its import
    "circuit-tracer": [TORCH, "circuit-tracer==0.5.0", "nnsight==0.6.3"],
}
HERE = Path(__file__).resolve().parent
MARKER = "transcoders-peer-complete.json"


def root() -> Path:
    env = os.environ.get("TRANSCODERS_PEERS")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("TRANSCODERS_CACHE")
    return (Path(cache).expanduser() if cache else Path.home() / ".cache" / "transcoders") / "peers"


def env_dir(name: str) -> Path:
    digest = hashlib.sha1(json.dumps([sys.version_info[:2], PEERS[name]]).encode()).hexdigest()[:10]
    return root() / f"{name}-{digest}"


def ensure(name: str, quiet: bool = True) -> Path:
    """The Python interpreter of peer ``name``'s environment, built first if it is not complete."""
    folder = env_dir(name)
    python = folder / "bin" / "python"
    if (folder / MARKER).is_file() and python.exists():
        return python
    if folder.exists():
        shutil.rmtree(folder)  # a build that did not finish
    print(f"peers: installing {' '.join(PEERS[name])} into {folder} (once)", file=sys.stderr, flush=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check"] + (["-q"] if quiet else [])
    subprocess.run(pip + ["--upgrade", "pip"], check=True)
    subprocess.run(pip + PEERS[name], check=True)
    versions = subprocess.run([str(python), "-m", "pip", "freeze"], check=True, capture_output=True, text=True).stdout
    (folder / MARKER).write_text(json.dumps({"requirements": PEERS[name], "freeze": versions.splitlines()}))
    return python


def versions(name: str) -> dict[str, str]:
    """``{package: version}`` of a built environment (what the checks ran against)."""
    freeze = json.loads((env_dir(name) / MARKER).read_text())["freeze"]
    return dict(line.split("==", 1) for line in freeze if "==" in line)


def run(name: str, script: str, request: dict, timeout: float = 1800) -> dict:
    """Run ``peers/{script}`` inside peer ``name``'s environment with ``request`` (JSON); returns its JSON reply.
    The script reads the request file named by its first argument and writes its reply to the second."""
    python = ensure(name)
    with tempfile.TemporaryDirectory() as tmp:
        req, rep = Path(tmp) / "request.json", Path(tmp) / "reply.json"
        req.write_text(json.dumps(request))
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        proc = subprocess.run([str(python), str(HERE / script), str(req), str(rep)], capture_output=True, text=True,
                              env=env, timeout=timeout)
        if proc.returncode != 0 or not rep.is_file():
            raise RuntimeError(f"{script} failed in the {name} environment (exit {proc.returncode}):\n"
                               f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        return json.loads(rep.read_text())


if __name__ == "__main__":
    for peer in sys.argv[1:] or list(PEERS):
        print(peer, ensure(peer, quiet=False))
