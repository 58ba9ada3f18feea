"""The README's quick tour runs: every command in it (but `serve`, which blocks; the viewer tests cover it) and its
Python example, in order, on the tiny model, with only sizes and names the tiny model cannot take swapped out."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from tiny_llama import synthetic_text

from transcoders.cli import main

README = Path(__file__).resolve().parent.parent / "README.md"
# (pattern, replacement) for what the tiny model (3 layers, 48 features, a 200-token vocabulary) cannot take
SWAPS = [
    (r"--layers 6\b", "--layers 1"),
    (r"\blayer_06\b", "layer_01"),
    (r"\b12:345\b", "2:5"),
    (r"--head 5\.3\b", "--head 1.0"),
    (r"logit:4-2\b", "logit:#5-#7"),  # digits are not in the tiny vocabulary
    (r"--target-ce-recovered 0\.9\b", "--target-fvu 0.999"),  # a random model's CE hardly depends on its MLP
]
TINY_DATA = ["--tokens", "2048", "--batch-size", "256", "--ctx-len", "32", "--chunk-tokens", "2048", "--forward-batch",
             "16", "--checkpoint-every", "1000"]


def quick_tour() -> tuple[list[str], str]:
    """The shell commands and the Python example of the README's quick tour."""
    text = README.read_text()
    tour = text[text.index("## Quick tour"):]
    tour = tour[: tour.index("\n## ", 1)]
    bash = re.search(r"```bash\n(.*?)```", tour, re.S).group(1)
    python = re.search(r"```python\n(.*?)```", tour, re.S).group(1)
    commands = [line.split("  #")[0].strip() for line in bash.splitlines() if line.startswith("transcoders ")]
    return commands, python


def tiny_argv(command: str, model: str, corpus: str) -> list[str]:
    for pattern, repl in SWAPS:
        command = re.sub(pattern, repl, command)
    argv = shlex.split(command)[1:]
    name = argv[0]
    if name in ("train", "sweep", "tune") and "--resume" not in argv:
        argv += ["--model", model, "--corpus", corpus, *TINY_DATA]
    if name == "train" and "--resume" not in argv:
        argv += ["--width", "48", "--k", "4"]
    if name == "sweep":
        argv += ["--widths", "48", "--ks", "2,4", "--eval-tokens", "256"]
    if name == "tune":
        argv += ["--width", "48", "--ladder", "2,4", "--refine", "0", "--proxy-tokens", "2048", "--eval-tokens", "256"]
    if name in ("eval", "features"):
        argv += ["--corpus", corpus, "--tokens", "256"]
    if name == "circuit" and "graph" in argv:
        argv += ["--max-feature-nodes", "64"]
    if name == "interp" and "--scores" not in argv:  # the LLM scores: the tiny model explains (the tests' stand-in)
        argv += ["--llm", model, "--test", "2", "--top", "3", "--quantiles", "1"]
    if name == "interp":
        argv += ["--probe-texts", "60"]
    return argv


def test_the_quick_tour_runs_on_the_tiny_model(tiny_model_dir, tiny_corpus, tmp_path, monkeypatch, capsys):
    commands, python = quick_tour()
    assert len(commands) >= 10 and commands[-1].startswith("transcoders serve")
    monkeypatch.chdir(tmp_path)
    texts = synthetic_text(20, seed=5)
    Path("french.txt").write_text("\n".join(texts[:10]))
    Path("english.txt").write_text("\n".join(texts[10:]))
    for command in commands[:-1]:
        argv = tiny_argv(command, tiny_model_dir, tiny_corpus)
        quiet = argv[0] in ("train", "eval", "sweep", "tune", "features", "circuit", "interp", "concepts")
        code = main(argv + (["--quiet"] if quiet else []))
        assert code == 0, f"{command}\n-> {argv}\n{capsys.readouterr().err}"
    assert (tmp_path / "runs/set/layer_02/features.sqlite").is_file() and (tmp_path / "runs/from-ct/layer_02").is_dir()
    assert len(list((tmp_path / "runs/set/graphs").glob("*.json"))) == 2
    for pattern, repl in [('load_model("default")', f"load_model({tiny_model_dir!r})"), ("logit:4-2", "logit:#5-#7"),
                          ("max_feature_nodes=4096", "max_feature_nodes=64")]:
        assert pattern in python
        python = python.replace(pattern, repl)
    exec(compile(python, "README.md (quick tour)", "exec"), {})  # its own assert checks the contributions add up


@pytest.mark.parametrize("text", ["--layers 6", "layer_06", "12:345@-1", "--head 5.3", "logit:4-2"])
def test_every_swap_is_needed(text):
    """Each swap above matches something in the tour (a stale swap would hide a changed command)."""
    commands, _ = quick_tour()
    assert any(text in c for c in commands)
