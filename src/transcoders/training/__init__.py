"""Training dictionaries on model activations: config, schedules, trainer, checkpoints."""

from ..dictionary.runs import CHECKPOINT_FILE, TRAIN_CONFIG_FILE
from .config import TrainConfig, parse_layers
from .trainer import Trainer, read_train_config, train

__all__ = ["CHECKPOINT_FILE", "TRAIN_CONFIG_FILE", "TrainConfig", "Trainer", "parse_layers", "read_train_config", "train"]
