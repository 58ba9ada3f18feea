"""Corpora, tokenising and packing, the held-out eval split, and (in ``activations``) the activation source."""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .corpus import DEFAULT_CORPUS_PIP, Document, is_eval_document, iter_documents, iter_split
    from .packing import Contexts, bos_token_id, iter_contexts, load_split, pack_contexts

__all__ = ["DEFAULT_CORPUS_PIP", "Contexts", "Document", "bos_token_id", "is_eval_document", "iter_contexts",
           "iter_documents", "iter_split", "load_split", "pack_contexts"]
__getattr__, __dir__ = lazy_exports(__name__, {
    ".corpus": ("DEFAULT_CORPUS_PIP", "Document", "is_eval_document", "iter_documents", "iter_split"),
    ".packing": ("Contexts", "bos_token_id", "iter_contexts", "load_split", "pack_contexts"),
})
