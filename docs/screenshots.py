"""Screenshots of the viewer's pages for the README, taken from a real runs folder with headless Chromium.

    .venv/bin/python docs/screenshots.py [--runs runs] [--feature demo-layer6:1000] [--graph PATH]

Needs runs with feature stores (`transcoders features RUN`) and, for the circuit page, a graph JSON.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from transcoders.viewer import make_server, serve_in_thread  # noqa: E402

ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-quic", "--no-first-run"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--feature", default="demo-layer6:1000", help="RUN:FEATURE for the feature page")
    ap.add_argument("--graph", default="set-k32/graphs/the-war-lasted-from-the-year-1732-to-the-graph.json")
    ap.add_argument("--out", default="docs/images")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    srv = make_server(args.runs, port=0)
    serve_in_thread(srv)
    origin = f"http://127.0.0.1:{srv.server_address[1]}"
    run, fid = args.feature.rsplit(":", 1)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=shutil.which("chromium"), args=ARGS)
        page = b.new_page(viewport={"width": 1360, "height": 900})

        def shot(hash_: str, wait: str, name: str, full: bool = True) -> None:
            page.goto(f"{origin}/{hash_}")
            page.wait_for_selector(wait)
            page.wait_for_timeout(300)
            page.screenshot(path=str(out / name), full_page=full)
            print("wrote", out / name)

        shot("#/", "table", "viewer-runs.png", full=False)
        shot(f"#/feature/{run}/{fid}", "#top-examples .ex", "viewer-feature.png", full=False)
        shot(f"#/graph/{args.graph}", "#graph-svg circle.node", "viewer-circuit.png", full=False)
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
