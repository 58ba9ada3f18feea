"""Sparse dictionaries (transcoder, skip transcoder, SAE): the module and its activations, save/load, the
run-folder layout (:mod:`.runs`), feature directions in the model (:mod:`.directions`) and other tools' formats
(:mod:`.interop`)."""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .activations import ACTIVATIONS, Activation, Encoded, InferenceForm, activation
    from .io import CONFIG_FILE, WEIGHTS_FILE, load_dictionary, read_config, save_dictionary
    from .module import Dictionary, DictionaryConfig
    from .names import KINDS

__all__ = [
    "ACTIVATIONS", "CONFIG_FILE", "KINDS", "WEIGHTS_FILE", "Activation", "Dictionary", "DictionaryConfig", "Encoded",
    "InferenceForm", "activation", "load_dictionary", "read_config", "save_dictionary",
]
__getattr__, __dir__ = lazy_exports(__name__, {
    ".activations": ("ACTIVATIONS", "Activation", "Encoded", "InferenceForm", "activation"),
    ".io": ("CONFIG_FILE", "WEIGHTS_FILE", "load_dictionary", "read_config", "save_dictionary"),
    ".module": ("Dictionary", "DictionaryConfig"), ".names": ("KINDS",),
})
