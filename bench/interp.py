"""Benchmark: explanations and scores per minute of `transcoders interp` with a local explainer on this machine.

    .venv/bin/python bench/interp.py RUN [--llm qwen2.5-coder-1.5b-instruct] [--features 10] [--threads N]

RUN is a run folder with a feature store (`transcoders features RUN`). The script explains and scores --features
features of it (in a scratch copy of the store, so the run's own store is untouched) and reports features per
minute and where the time goes: the explanation (prefill + greedy generation) and the detection and fuzzing
questions. The baseline, measured in the same run on the same prompts: scoring every question as a whole prompt
instead of continuing from the shared prefix's cached keys and values.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))


class Timed:
    """Passes calls to an LLM and adds up the seconds spent in each kind of call."""

    def __init__(self, llm, share_prefix=True):
        self.llm, self.name, self.share = llm, llm.name, share_prefix
        self.seconds = {"explain": 0.0, "score": 0.0}
        self.items = 0

    def generate(self, *a, **k):
        t = time.perf_counter()
        try:
            return self.llm.generate(*a, **k)
        finally:
            self.seconds["explain"] += time.perf_counter() - t

    def yes_probabilities(self, system, prefix, items, suffix=""):
        t = time.perf_counter()
        try:
            self.items += len(items)
            return self.llm.yes_probabilities(system, prefix, items, suffix, share_prefix=self.share)
        finally:
            self.seconds["score"] += time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("--llm", default="")
    p.add_argument("--features", type=int, default=10)
    p.add_argument("--threads", type=int, default=0)
    ns = p.parse_args()
    if ns.threads:
        torch.set_num_threads(ns.threads)
    from transcoders.dictionary.runs import store_path
    from transcoders.interp import DEFAULT_LLM, InterpConfig, LocalLLM, interp
    from transcoders.models import load_model

    name = ns.llm or DEFAULT_LLM
    t0 = time.perf_counter()
    lm = load_model(name)
    print(f"LLM {name}: loaded in {time.perf_counter() - t0:.1f} s; {torch.get_num_threads()} threads")
    local = LocalLLM(lm, name=f"local:{name}")
    results = {}
    for label, share in (("shared prefix (ours)", True), ("whole prompts (baseline)", False)):
        with tempfile.TemporaryDirectory() as tmp:
            run = Path(tmp) / "run"
            shutil.copytree(ns.run, run, ignore=shutil.ignore_patterns("*.safetensors.tmp*"))
            for suffix in ("-wal", "-shm"):
                Path(str(store_path(run)) + suffix).unlink(missing_ok=True)
            llm = Timed(local, share)
            if not share:  # the baseline answers the same questions: reuse the explanations it would have written
                llm.generate = lambda *a, **k: results["shared prefix (ours)"]["replies"].pop(0)  # type: ignore
            replies: list[str] = []
            if share:
                gen = llm.generate

                def keep(*a, _gen=gen, _out=replies, **k):
                    r = _gen(*a, **k)
                    _out.append(r)
                    return r

                llm.generate = keep  # type: ignore[method-assign]
            t = time.perf_counter()
            (summary,) = interp([run], InterpConfig(scores="llm", features=ns.features), llm=llm,
                                progress=False).values()
            wall = time.perf_counter() - t
            results[label] = {"wall": wall, "seconds": dict(llm.seconds), "items": llm.items, "summary": summary,
                              "replies": list(replies)}
    ours, base = results["shared prefix (ours)"], results["whole prompts (baseline)"]
    n = ns.features
    print(f"\n{n} features of {ns.run}, explainer and scorer {name}")
    print(f"  features (explanation + detection + fuzzing) per minute: {60 * n / ours['wall']:.2f}")
    print(f"  explanations per minute: {60 * n / ours['seconds']['explain']:.2f} "
          f"({ours['seconds']['explain'] / n:.1f} s each)")
    print(f"  scoring questions per minute: {60 * ours['items'] / ours['seconds']['score']:.0f} "
          f"({ours['items'] / n:.0f} per feature, {ours['seconds']['score'] / n:.1f} s per feature)")
    print(f"  baseline, whole prompts: {60 * base['items'] / base['seconds']['score']:.0f} questions per minute; "
          f"shared prefix {base['seconds']['score'] / ours['seconds']['score']:.2f}x faster")
    d, z = ours["summary"]["detection"], ours["summary"]["fuzzing"]
    print(f"  scores: detection {d[0]:.3f} [{d[1]:.3f}, {d[2]:.3f}], fuzzing {z[0]:.3f} [{z[1]:.3f}, {z[2]:.3f}]")


if __name__ == "__main__":
    main()
