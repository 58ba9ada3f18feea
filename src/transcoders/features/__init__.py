"""Feature dashboards' data: one pass over held-out text into a SQLite store per run (``features.sqlite``)."""

from .collect import FeaturesConfig, collect
from .store import STORE_FILE, connect, get_meta, store_path

__all__ = ["FeaturesConfig", "STORE_FILE", "collect", "connect", "get_meta", "store_path"]
