"""The dictionary step alone, sparsify's (runs in its virtual environment): the body of `Trainer.fit`'s hook for a
transcoder with its defaults (fused TopK encoder, embedding-bag decoder, FVU loss, schedule-free signum optimiser,
did-fire bookkeeping), on activations already in memory.

    python step_sparsify.py ACTS.safetensors WIDTH K BATCH STEPS THREADS     -> one JSON line
"""

import json
import sys
import time

import torch
from safetensors.torch import load_file
from schedulefree import ScheduleFreeWrapper
from sparsify import SparseCoder, SparseCoderConfig
from sparsify.sign_sgd import SignSGD


def main() -> None:
    acts, width, k, batch, steps, threads = sys.argv[1], *map(int, sys.argv[2:7])
    torch.set_num_threads(threads)
    t = load_file(acts)
    x, y = t["x"], t["y"]
    torch.manual_seed(0)
    sae = SparseCoder(x.shape[1], SparseCoderConfig(num_latents=width, k=k, transcode=True), "cpu", dtype=torch.float32)
    opt = ScheduleFreeWrapper(SignSGD([dict(params=sae.parameters(), lr=5e-3 / (width / 2**14) ** 0.5)]), momentum=0.95)
    opt.train()
    with torch.no_grad():  # its first-step initialisation
        sae.encoder.bias.data = -x.mean(0) @ sae.encoder.weight.data.T
        sae.b_dec.data = y.mean(0)
    since_fired = torch.zeros(width, dtype=torch.long)
    did_fire = torch.zeros(width, dtype=torch.bool)
    n = x.shape[0] // batch

    def step(i: int) -> float:
        xb, yb = x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]
        total_variance = (yb - yb.mean(0)).pow(2).sum()
        out = sae(x=xb, y=yb, dead_mask=None, total_variance=total_variance)  # auxk_alpha = 0 by default
        did_fire[out.latent_indices.flatten()] = True
        fvu = float(out.fvu.detach())
        (out.fvu + out.auxk_loss + out.multi_topk_fvu / 8).backward()
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            since_fired.add_(batch)
            since_fired[did_fire] = 0
            did_fire.zero_()
        return fvu

    step(0)  # warm-up
    t0 = time.perf_counter()
    for s in range(steps):
        fvu = step(s % n)
    dt = time.perf_counter() - t0
    print(json.dumps({"tokens_per_s": steps * batch / dt, "seconds": dt, "fvu_last": fvu}))


if __name__ == "__main__":
    main()
