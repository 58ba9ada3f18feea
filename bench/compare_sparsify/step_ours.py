"""The dictionary step alone, ours: `LayerState.step` (the trainer's own step: TopK encoder with sparse gradients,
embedding-bag decoder, fused Adam, dead-feature and statistics bookkeeping) on activations already in memory.

    python step_ours.py ACTS.safetensors WIDTH K BATCH STEPS THREADS     -> one JSON line
"""

import json
import sys
import time

import torch
from safetensors.torch import load_file

from transcoders.dictionary import Dictionary, DictionaryConfig
from transcoders.training import TrainConfig
from transcoders.training.trainer import LayerState, Trainer, make_adam


def main() -> None:
    acts, width, k, batch, steps, threads = sys.argv[1], *map(int, sys.argv[2:7])
    torch.set_num_threads(threads)
    t = load_file(acts)
    x, y = t["x"], t["y"]
    cfg = TrainConfig(activation="topk", k=k, width=width, tokens=steps * batch, batch_size=batch)
    dic = Dictionary(DictionaryConfig(d_in=x.shape[1], d_out=y.shape[1], width=width, k=k))
    dic.reset_parameters(torch.Generator().manual_seed(0))
    st = LayerState(6, dic, make_adam(dic, cfg.lr), since_fired=torch.zeros(width, dtype=torch.long))
    tr = Trainer(cfg, None, None, [6], out=None)
    tr.states = {6: st}
    tr.init_from_data({6: (x, y)})  # scales and biases from the data, as a run starts
    n = x.shape[0] // batch
    st.step(x[:batch], y[:batch], cfg.lr, 0.0, cfg)  # warm-up (allocations, thread pools)
    t0 = time.perf_counter()
    for s in range(steps):
        i = s % n
        stats = st.step(x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch], cfg.lr, 0.0, cfg)
    dt = time.perf_counter() - t0
    print(json.dumps({"tokens_per_s": steps * batch / dt, "seconds": dt, "fvu_last": stats["fvu"]}))


if __name__ == "__main__":
    main()
