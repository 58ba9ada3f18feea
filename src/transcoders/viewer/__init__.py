"""The local web viewer (``transcoders serve``): runs, sweeps, feature pages, labels, blind rating, circuit graphs."""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .server import ViewerError, make_server, new_token, serve_in_thread

__all__ = ["ViewerError", "make_server", "new_token", "serve_in_thread"]
__getattr__, __dir__ = lazy_exports(__name__, {".server": ("ViewerError", "make_server", "new_token", "serve_in_thread")})
