"""transcoders: train, evaluate and analyse transcoders (sparse replacements for MLP layers)."""

__version__ = "0.1.0"
