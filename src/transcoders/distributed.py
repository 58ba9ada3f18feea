"""Training over several processes with PyTorch's own distribution layer (launched by ``torchrun``).

    torchrun --nproc-per-node 2 -m transcoders train ...                      # data parallel
    torchrun --nproc-per-node 2 -m transcoders train --layers all --distribute-layers ...

The data order is the single-process one whatever the number of processes: a chunk's
contexts are split between the ranks, each rank harvests its share (the model pass is
the cost, so it is divided), the shares are gathered back in context order, and batch
``b`` of chunk ``c`` is the same set of tokens as in a one-process run.

* **Data parallel** (default): every rank holds every layer's dictionary and trains on
  its ``1/world`` slice of each global batch (``--batch-size`` stays the global batch);
  gradients are averaged, so the weights match a one-process run with the same
  ``--batch-size``, up to floating-point summation order.
* **--distribute-layers**: each layer's dictionary lives on one rank (round robin) and
  trains on the whole global batch; a layer's harvested activations are gathered to its
  owner only.

Checkpoints hold every layer and the global data position, written by rank 0 only, so a
run resumes on any number of processes. ``Group()`` (one process) makes every method a
no-op, which is how the single-process trainer runs through the same code.

A ground-floor module: the activation source (``data``) and the trainer (``training``) both use it.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

# Collectives wait this long for the slowest rank (rank 0 writing a multi-GB checkpoint while the others wait;
# NCCL's default of 10 minutes would abort the job mid-write).
TIMEOUT = timedelta(hours=2)


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


@dataclass
class Group:
    rank: int = 0
    world: int = 1
    device: str = "cpu"  # where this rank's tensors live (NCCL collectives take tensors on it)
    cpu_group: dist.ProcessGroup | None = field(default=None, repr=False)  # a gloo group for pickled objects (kept off the GPU)

    @classmethod
    def from_env(cls, device: str = "cpu") -> tuple[Group, str]:
        """The group torchrun describes in the environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_*``),
        and the device this rank uses (``cuda`` becomes ``cuda:LOCAL_RANK``). One process: ``Group()``."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls(), device
        local = int(os.environ.get("LOCAL_RANK", "0"))
        backend = "gloo"
        if device.startswith("cuda"):
            device = f"cuda:{local}" if device == "cuda" else device
            torch.cuda.set_device(device)
            backend = "nccl"
        if not dist.is_initialized():
            dist.init_process_group(backend, timeout=TIMEOUT)
            # torch asks for this before exit: without it a rank's backend threads can outlive the interpreter's
            # shutdown and abort it ("terminate called without an active exception"), failing a finished job
            atexit.register(_destroy)
        cpu_group = dist.new_group(backend="gloo", timeout=TIMEOUT) if backend != "gloo" else None
        return cls(dist.get_rank(), dist.get_world_size(), device, cpu_group), device

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def share(self, n: int, rank: int | None = None) -> slice:
        """This rank's contiguous share of ``n`` items (the first ``n % world`` ranks get one more)."""
        r = self.rank if rank is None else rank
        base, extra = divmod(n, self.world)
        start = r * base + min(r, extra)
        return slice(start, start + base + (1 if r < extra else 0))

    # ------------------------------------------------------------ collectives
    def gather_rows(self, t: torch.Tensor, dst: int | None = None) -> torch.Tensor | None:
        """Every rank's rows of ``t`` concatenated in rank order (row counts may differ): on all ranks, or only on
        ``dst`` (the others get None)."""
        if not self.distributed:
            return t
        t = t.to(self.device)
        n = torch.tensor([t.shape[0]], device=t.device)
        sizes = [torch.zeros_like(n) for _ in range(self.world)]
        dist.all_gather(sizes, n)
        counts = [int(c) for c in sizes]
        padded = t.new_zeros((max(counts), *t.shape[1:]))
        padded[: t.shape[0]] = t
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        if dst is None:
            dist.all_gather(parts, padded)
        else:
            dist.gather(padded, parts if self.rank == dst else None, dst=dst)
            if self.rank != dst:
                return None
        return torch.cat([p[:c] for p, c in zip(parts, counts)])

    def average_(self, tensors: list[torch.Tensor]) -> None:
        """All-reduce the mean, in place (one flat buffer per dtype and device: one message, not one per tensor)."""
        if not self.distributed or not tensors:
            return
        groups: dict[tuple, list[torch.Tensor]] = {}
        for t in tensors:
            groups.setdefault((t.dtype, t.device), []).append(t)
        for ts in groups.values():
            flat = torch.cat([t.reshape(-1) for t in ts])
            dist.all_reduce(flat)
            flat /= self.world
            for t, part in zip(ts, flat.split([t.numel() for t in ts])):
                t.copy_(part.view_as(t))

    def any_(self, mask: torch.Tensor) -> torch.Tensor:
        """Element-wise logical OR of a bool tensor over ranks."""
        return self._reduced(mask.to(torch.uint8), "MAX").bool() if self.distributed else mask

    def min(self, t: torch.Tensor) -> torch.Tensor:
        """All-reduce minimum (a new tensor)."""
        return self._reduced(t, "MIN")

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """All-reduce sum (a new tensor)."""
        return self._reduced(t, "SUM")

    def _reduced(self, t: torch.Tensor, op: str) -> torch.Tensor:
        if not self.distributed:
            return t
        t = t.clone()
        dist.all_reduce(t, op=getattr(dist.ReduceOp, op))
        return t

    def broadcast_object(self, obj, src: int = 0):
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=src, group=self.cpu_group)
        return box[0]

    def gather_objects(self, obj, dst: int = 0) -> list | None:
        """Every rank's ``obj`` (picklable; move tensors to the CPU first) in rank order on ``dst``, else None.
        Under NCCL this goes through a gloo group in host memory, so checkpoints never pass through GPU memory."""
        if not self.distributed:
            return [obj]
        out = [None] * self.world if self.rank == dst else None
        dist.gather_object(obj, out, dst=dst, group=self.cpu_group)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()
