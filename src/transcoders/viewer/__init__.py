"""The local web viewer (``transcoders serve``): runs, sweeps, feature pages, labels, blind rating, circuit graphs."""

from .server import ViewerError, make_server, new_token, serve_in_thread

__all__ = ["ViewerError", "make_server", "new_token", "serve_in_thread"]
