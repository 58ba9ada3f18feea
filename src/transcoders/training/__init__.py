"""Training dictionaries on model activations: config, schedules, trainer, checkpoints."""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from ..dictionary.runs import CHECKPOINT_FILE, TRAIN_CONFIG_FILE
    from .config import TrainConfig, parse_layers
    from .trainer import Trainer, read_train_config, train

__all__ = ["CHECKPOINT_FILE", "TRAIN_CONFIG_FILE", "TrainConfig", "Trainer", "parse_layers", "read_train_config", "train"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "..dictionary.runs": ("CHECKPOINT_FILE", "TRAIN_CONFIG_FILE"), ".config": ("TrainConfig", "parse_layers"),
    ".trainer": ("Trainer", "read_train_config", "train"),
})
