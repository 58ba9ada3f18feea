"""Start-up time of the `transcoders` command: `--help`, a subcommand's `--help` and an argument error.

    .venv/bin/python bench/cli_startup.py [--repeat 5]

Each case runs as a fresh process (the way a user runs it); the figure is the median wall time. The target is
under 1.5 s: the parser is built from configuration modules that import neither torch nor transformers, and a
command imports the library only when it runs. The baseline, measured in the same run, is what the command line
did before: import every command's implementation up front (5.5-6.4 s here then). For scale, the same run also
times `python -c "import torch"`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

EXE = str(Path(sys.executable).with_name("transcoders"))
CASES = {
    "transcoders --help": [EXE, "--help"],
    "transcoders train --help": [EXE, "train", "--help"],
    "transcoders circuit --help": [EXE, "circuit", "--help"],
    "transcoders eval (no run: argument error)": [EXE, "eval"],
    "transcoders train --layers six (bad value)": [EXE, "train", "--layers", "six", "--out", "/nonexistent/x"],
    # the baseline: what the command line imported before it went lazy (every command's implementation up front)
    "every command's implementation imported (before)": [sys.executable, "-c", "import transcoders.cli; " + "; ".join(
        f"import transcoders.{m}" for m in ("circuits.api", "training.trainer", "evaluation.measure", "sweeps.tune",
                                            "features.collection", "interp.run", "dictionary.interop", "viewer.server"))],
    'python -c "import torch" (for scale)': [sys.executable, "-c", "import torch"],
}
BASELINE = "every command's implementation imported (before)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    medians = {}
    for name, argv in CASES.items():
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times.append(time.perf_counter() - start)
        medians[name] = statistics.median(times)
    base = medians[BASELINE]
    for name, t in medians.items():
        ratio = f"  {base / t:5.1f}x faster than before" if name.startswith("transcoders") else ""
        print(f"  {name:<52} {t:6.2f} s{ratio}")


if __name__ == "__main__":
    main()
