"""The activation source: shuffled ``(mlp_in, mlp_out)`` pairs for one or more layers.

Training contexts are cut into fixed *chunks* of ``chunk_contexts`` contexts. A chunk
is harvested with one stopped-early model pass (every requested layer at once), its
special-token (BOS) positions are dropped, and it is shuffled with a permutation
seeded by ``(seed, chunk index)``. The batch at any step is therefore a pure function
of ``(seed, chunk, batch index)``: an interrupted run resumes at exactly the batch it
stopped at by re-harvesting (or re-reading) one chunk.

With ``cache_dir`` each harvested chunk is also written to disk (float16 by default),
so several dictionaries (other widths, kinds, λ) can train from one model pass.

Under torchrun (``group``), each rank harvests its share of a chunk's contexts and the
shares are gathered back in context order, so chunks and batches are the same as in one
process (see ``transcoders/distributed.py``); ``owners`` sends a layer's activations to one
rank only (``--distribute-layers``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save

from ..distributed import Group
from ..errors import CheckpointError
from ..models import LoadedModel, capture
from ..paths import atomic_write_bytes, atomic_write_json

if TYPE_CHECKING:
    from .packing import Contexts

CACHE_META = "meta.json"


def hook_names(layer: int) -> tuple[str, str]:
    return f"blocks.{layer}.mlp.in", f"blocks.{layer}.mlp.out"


def tokens_digest(tokens: torch.Tensor) -> str:
    return hashlib.sha1(tokens.to(torch.int64).contiguous().numpy().tobytes()).hexdigest()[:16]


@dataclass
class Chunk:
    """One harvested chunk: per layer ``(x [n, d_in], y [n, d_out])`` with n non-special tokens."""

    index: int
    pairs: dict[int, tuple[torch.Tensor, torch.Tensor]]

    @property
    def n_tokens(self) -> int:
        return next(iter(self.pairs.values()))[0].shape[0]


class ActivationSource:
    """Yields shuffled training batches ``{layer: (x, y)}`` from a model and packed contexts."""

    def __init__(
        self,
        lm: LoadedModel,
        contexts: Contexts,
        layers: list[int],
        *,
        chunk_contexts: int = 1024,
        forward_batch: int = 32,
        seed: int = 0,
        cache_dir: str | Path | None = None,
        cache_dtype: torch.dtype = torch.float16,
        special_ids: set[int] | None = None,
        group: Group | None = None,
        owners: dict[int, int] | None = None,
    ):
        self.lm = lm
        self.contexts = contexts
        self.layers = sorted(layers)
        self.chunk_contexts = min(chunk_contexts, len(contexts))
        self.forward_batch = forward_batch
        self.seed = seed
        self.special_ids = special_ids if special_ids is not None else special_token_ids(lm.tokenizer)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.cache_dtype = cache_dtype
        self.n_chunks = len(contexts) // self.chunk_contexts
        self.group = group or Group()
        self.owners = owners  # layer -> the rank that trains it; None: every rank gets every layer
        if self.group.distributed and self.cache_dir is not None:
            raise CheckpointError("--cache-activations does not work under torchrun yet: drop it (each rank harvests "
                                  "its share of every chunk, so the model pass is already divided)")
        # Called as ``on_harvest(contexts done, contexts in the chunk)`` after each forward batch of a
        # harvest, so a progress display can show the model pass between training steps.
        self.on_harvest: Callable[[int, int], None] | None = None
        if self.cache_dir is not None:
            self._check_cache_meta()

    # ------------------------------------------------------------ chunks
    def chunk_tokens(self, c: int) -> torch.Tensor:
        """Token ids of chunk ``c`` (chunks past the end wrap around: another epoch)."""
        i = c % self.n_chunks
        return self.contexts.tokens[i * self.chunk_contexts : (i + 1) * self.chunk_contexts]

    def harvest(self, tokens: torch.Tensor, layers: list[int] | None = None) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """One stopped-early pass over ``tokens: [n_ctx, ctx_len]``; BOS/special positions dropped. Under torchrun,
        each rank runs the model on its share of the contexts and receives the rows of the layers it holds."""
        if not self.group.distributed:
            return self._harvest(tokens, layers)
        pairs = self._harvest(tokens[self.group.share(tokens.shape[0])], layers)
        out = {}
        for layer, (x, y) in pairs.items():
            dst = None if self.owners is None else self.owners[layer]
            xs, ys = self.group.gather_rows(x, dst), self.group.gather_rows(y, dst)
            if xs is not None and ys is not None:
                out[layer] = (xs, ys)
        return out

    def _harvest(self, tokens: torch.Tensor, layers: list[int] | None = None) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        layers = layers or self.layers
        names = [n for layer in layers for n in hook_names(layer)]
        special = torch.tensor(sorted(self.special_ids), dtype=tokens.dtype)
        keep = ~torch.isin(tokens, special) if self.special_ids else torch.ones_like(tokens, dtype=torch.bool)
        outs: dict[str, list[torch.Tensor]] = {n: [] for n in names}
        with torch.inference_mode():
            for s in range(0, tokens.shape[0], self.forward_batch):
                ids = tokens[s : s + self.forward_batch]
                acts = capture(self.lm, ids, names, stop_early=True)
                mask = keep[s : s + self.forward_batch]
                for n in names:
                    outs[n].append(acts[n][mask].float())
                if self.on_harvest is not None:
                    self.on_harvest(min(s + self.forward_batch, tokens.shape[0]), tokens.shape[0])
        if tokens.shape[0] == 0:  # a rank whose share of a (partial) chunk is empty
            empty = torch.zeros(0, self.lm.adapter.d_model, device=self.lm.device)
            return {layer: (empty, empty.clone()) for layer in layers}
        return {layer: (torch.cat(outs[hook_names(layer)[0]]), torch.cat(outs[hook_names(layer)[1]])) for layer in layers}

    def chunk(self, c: int, tokens_needed: int | None = None) -> Chunk:
        """Chunk ``c``, unshuffled: from the disk cache if it is there, else harvested (and cached). Without a
        cache and with ``tokens_needed`` below a chunk, only enough contexts for that many tokens are harvested."""
        i = c % self.n_chunks
        if self.cache_dir is None and tokens_needed is not None:
            tokens = self.chunk_tokens(c)
            n_special = int(torch.isin(tokens, torch.tensor(sorted(self.special_ids), dtype=tokens.dtype)).sum(1).max()) \
                if self.special_ids else 0
            n = -(-tokens_needed // max(1, tokens.shape[1] - n_special))  # contexts that surely hold enough
            if n < tokens.shape[0]:
                return Chunk(c, self.harvest(tokens[:n]))
        if self.cache_dir is not None:
            path = self.cache_dir / f"chunk_{i:05d}.safetensors"
            if path.exists():
                try:
                    t = load_file(str(path))
                    return Chunk(c, {layer: (t[f"{layer}.in"].float(), t[f"{layer}.out"].float()) for layer in self.layers})
                except Exception as e:  # corrupt or partial file from an old crash: harvest again
                    print(f"warning: re-harvesting {path.name} ({str(e).splitlines()[0]})")
            # A shared cache keeps every layer it was made for, so other runs can still read them.
            pairs = self.harvest(self.chunk_tokens(c), self.cache_layers)
            blob = {}
            for layer, (x, y) in pairs.items():
                blob[f"{layer}.in"] = x.to(self.cache_dtype).contiguous()
                blob[f"{layer}.out"] = y.to(self.cache_dtype).contiguous()
            atomic_write_bytes(path, save(blob))
            # Train on exactly what a later run reads back from the cache.
            pairs = {layer: (blob[f"{layer}.in"].float(), blob[f"{layer}.out"].float()) for layer in self.layers}
            return Chunk(c, pairs)
        return Chunk(c, self.harvest(self.chunk_tokens(c)))

    def permutation(self, c: int, n: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(_mix(self.seed, c))
        return torch.randperm(n, generator=g)

    def batches(self, batch_size: int, start_chunk: int = 0, start_batch: int = 0, remaining: int | None = None,
                ) -> Iterator[tuple[int, int, dict[int, tuple[torch.Tensor, torch.Tensor]]]]:
        """Endless ``(chunk, batch index, {layer: (x, y)})``; the tail of each chunk smaller than a batch is dropped.

        ``remaining``: batches still wanted from here. Without an activation cache, a chunk that would be used only
        in part is harvested only in part (a model pass for tokens never trained on is the costliest waste there
        is: dropping BOS makes a chunk of N tokens yield a little under N/batch batches, so a run of exactly one
        chunk used to harvest a whole second chunk for its last step). The cut depends only on where the chunk's
        first batch falls in the run, so a resumed run harvests the same partial chunk."""
        c = start_chunk
        b0 = start_batch
        while True:
            needed = None if remaining is None else remaining + b0  # batches this chunk must give, from its start
            ch = self.chunk(c, None if needed is None else needed * batch_size)
            perm = self.permutation(c, ch.n_tokens)
            for b in range(b0, ch.n_tokens // batch_size):
                idx = perm[b * batch_size : (b + 1) * batch_size]
                yield c, b, {layer: (x[idx], y[idx]) for layer, (x, y) in ch.pairs.items()}
                if remaining is not None:
                    remaining -= 1
            del ch, perm  # let this chunk go before the next is harvested: two at once would double the peak
            c, b0 = c + 1, 0

    # ------------------------------------------------------------ cache meta
    def _meta(self) -> dict:
        return {
            "model": self.lm.name,
            "chunk_contexts": self.chunk_contexts,
            "ctx_len": int(self.contexts.tokens.shape[1]),
            "tokens_sha1": tokens_digest(self.contexts.tokens[: self.n_chunks * self.chunk_contexts]),
            "layers": self.layers,
            "dtype": str(self.cache_dtype).replace("torch.", ""),
        }

    def _check_cache_meta(self) -> None:
        assert self.cache_dir is not None
        meta = self._meta()
        path = self.cache_dir / CACHE_META
        if path.exists():
            old = json.loads(path.read_text())
            missing = set(self.layers) - set(old.get("layers", []))
            same = {k: old.get(k) for k in meta if k != "layers"} == {k: meta[k] for k in meta if k != "layers"}
            if not same or missing:
                raise CheckpointError(
                    f"activation cache {self.cache_dir} was made for other settings "
                    f"(model/corpus/context length/layers differ): use another --cache-activations folder or delete it"
                )
            self.cache_layers = sorted(old["layers"])
        else:
            self.cache_layers = self.layers
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, meta)


def special_token_ids(tokenizer) -> set[int]:
    if tokenizer is None:
        return set()
    ids = {tokenizer.bos_token_id, tokenizer.eos_token_id}
    return {int(i) for i in ids if i is not None}


def _mix(seed: int, c: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{c}".encode()).digest()[:8], "little")
