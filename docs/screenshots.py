"""Screenshots of the viewer for the README and the guide, from a real default-model set, with headless Chromium.

    .venv/bin/python docs/screenshots.py [--runs runs/screens] [--tokens 400000] [--threads 0]

One command, resumable: what is missing is made first with the command line (each step is skipped when its output
is there): a transcoder set on every layer of the default model (`transcoders train --layers all`), its dashboards'
data (`transcoders features`), and attribution graphs of the two prompts the README shows: the paper's greater-than
case ("The war lasted from the year 1732 to the year 17", target the logit of "4" minus that of "2") and "The capital
of France is" (the top logits). Then the pages are shot at 1360 x 900: runs, a feature page, both graphs (their most
influential feature at the last token clicked: the view centres on it and the side panel shows its examples) and a
blind rating item.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from transcoders.cli import main as cli  # noqa: E402
from transcoders.viewer import make_server, serve_in_thread  # noqa: E402

ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-quic", "--no-first-run"]
GRAPHS = {  # screenshot name: (prompt, target)
    "viewer-graph-greater-than.png": ("The war lasted from the year 1732 to the year 17", "logit:4-2"),
    "viewer-graph-france.png": ("The capital of France is", ""),
}


def step(argv: list[str]) -> None:
    print("+ transcoders " + " ".join(argv), flush=True)
    if cli(argv) != 0:
        raise SystemExit(f"`transcoders {' '.join(argv)}` failed")


def prepare(runs: Path, tokens: int, threads: int) -> Path:
    """The set, its stores and the graphs (each made only when missing)."""
    s = runs / "set"
    t = ["--threads", str(threads)] if threads else []
    if not (s / "layer_29" / "config.json").is_file():
        step(["train", "--layers", "all", "--tokens", str(tokens), "--out", str(s), *(["--resume", str(s)] if (
            s / "train_config.json").is_file() else []), *t])
    step(["features", str(s), "--tokens", "65536", *t])  # continues a store that stopped early; quick when complete
    for name, (prompt, target) in GRAPHS.items():
        out = s / "graphs" / name.replace(".png", ".json")
        if not out.is_file():
            step(["circuit", "--set", str(s), "--prompt", prompt, "--mode", "graph", *(["--target", target] if target
                 else []), "--out", str(out)])
    return s


def strongest_feature(graph: Path) -> str:
    """The most influential feature at the last token (where the prediction is made), else anywhere."""
    nodes = [n for n in json.loads(graph.read_text())["nodes"] if n["feature_type"] == "cross layer transcoder"]
    last = max(int(n["ctx_idx"]) for n in nodes)
    pool = [n for n in nodes if int(n["ctx_idx"]) == last] or nodes
    return min(pool, key=lambda n: n.get("influence") if n.get("influence") is not None else 2.0)["node_id"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs/screens", help="runs folder to make (or reuse) and serve")
    ap.add_argument("--tokens", type=int, default=400_000, help="training tokens of the set")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: its default)")
    ap.add_argument("--feature", default="set/layer_06:", help="RUN:FEATURE of the feature page (no feature: the "
                    "run's most frequent one)")
    ap.add_argument("--out", default="docs/images")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    runs = Path(args.runs)
    set_dir = prepare(runs, args.tokens, args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    srv = make_server(runs, port=0)
    serve_in_thread(srv)
    origin = f"http://127.0.0.1:{srv.server_address[1]}"
    run, fid = args.feature.rsplit(":", 1)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=shutil.which("chromium"), args=ARGS)
        page = b.new_page(viewport={"width": 1360, "height": 900})

        def shot(hash_: str, wait: str, name: str) -> None:
            page.goto(f"{origin}/{hash_}")
            page.wait_for_selector(wait)
            page.wait_for_timeout(400)
            page.screenshot(path=str(out / name))
            print("wrote", out / name)

        shot("#/", "table", "viewer-runs.png")
        if not fid:
            page.goto(f"{origin}/#/run/{run.replace('/', '%2F')}")
            page.wait_for_selector("table")
            fid = str(page.evaluate(f"fetch('/api/random?run={run}').then(r => r.json())")["id"])
        shot(f"#/feature/{run.replace('/', '%2F')}/{fid}", "#top-examples .ex", "viewer-feature.png")
        for name in GRAPHS:
            graph = set_dir / "graphs" / name.replace(".png", ".json")
            rel = str(graph.relative_to(runs)).replace("/", "%2F")
            shot(f"#/graph/{rel}?clickedId={strongest_feature(graph)}", "#node-examples .ex", name)
        page.goto(f"{origin}/#/rate")
        page.wait_for_selector("#rate-go")
        page.fill("#rate-n", "3")
        page.click("#rate-go")
        page.wait_for_selector("#rate-examples .ex")
        page.screenshot(path=str(out / "viewer-rating.png"))
        print("wrote", out / "viewer-rating.png")
        b.close()
    srv.shutdown()


if __name__ == "__main__":
    main()
