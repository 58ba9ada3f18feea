"""Runs inside sparsify's own virtual environment: train one TopK transcoder with EleutherAI sparsify as its
users do (full-model forward every step, its defaults for everything not named here), on the CPU in fp32.

sparsify's CLI hard-codes `device_map={"": "cuda:0"}`, so this calls its Trainer the way its `__main__` does,
with the model on the CPU. Prints one JSON line: wall seconds, tokens trained, peak resident memory.
"""

import json
import resource
import sys
import time

import torch
from datasets import Dataset
from sparsify import SparseCoderConfig, TrainConfig, Trainer
from transformers import AutoModel


def main() -> None:
    model_dir, data_dir, save_dir, layer, width, k, batch, threads, bos = sys.argv[1:10]
    torch.set_num_threads(int(threads))
    t0 = time.perf_counter()
    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32)
    dataset = Dataset.load_from_disk(data_dir).shuffle(42).with_format("torch")
    cfg = TrainConfig(SparseCoderConfig(num_latents=int(width), k=int(k), transcode=True),
                      batch_size=int(batch), hookpoints=[f"layers.{layer}.mlp"], exclude_tokens=[int(bos)],
                      log_to_wandb=False, save_dir=save_dir, run_name="run", save_every=10**9)
    trainer = Trainer(cfg, dataset, model)
    t_fit = time.perf_counter()
    trainer.fit()
    end = time.perf_counter()
    used = dataset.select(range(len(dataset) // int(batch) * int(batch)))
    tokens = sum(int((row["input_ids"] != int(bos)).sum()) for row in used)
    print(json.dumps({"seconds": end - t0, "fit_seconds": end - t_fit, "tokens": tokens,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)


if __name__ == "__main__":
    main()
