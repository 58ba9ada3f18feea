"""Feature dashboards' data: one pass over held-out text into a SQLite store per run (``features.sqlite``)."""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .collection import collect
    from .config import FeaturesConfig
    from .store import STORE_FILE, connect, get_meta, store_path

__all__ = ["FeaturesConfig", "STORE_FILE", "collect", "connect", "get_meta", "store_path"]
__getattr__, __dir__ = lazy_exports(__name__, {
    ".collection": ("collect",), ".config": ("FeaturesConfig",), ".store": ("STORE_FILE", "connect", "get_meta", "store_path"),
})
