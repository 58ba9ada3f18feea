"""Sparse dictionaries (transcoder, skip transcoder, SAE): module, config, save/load."""

from .io import CONFIG_FILE, WEIGHTS_FILE, load_dictionary, read_config, save_dictionary
from .module import ACTIVATIONS, KINDS, Dictionary, DictionaryConfig, Encoded

__all__ = [
    "ACTIVATIONS", "CONFIG_FILE", "Dictionary", "DictionaryConfig", "Encoded", "KINDS",
    "WEIGHTS_FILE", "load_dictionary", "read_config", "save_dictionary",
]
