"""End to end in a real browser: Playwright driving Debian's headless Chromium against `transcoders serve` on loopback.

Skipped (with the reason) where Chromium or Playwright is missing; `make install` installs both on Debian.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3

import pytest

from transcoders.features import store_path
from transcoders.interp import InterpConfig, LocalLLM, run_interp

CHROMIUM = os.environ.get("TRANSCODERS_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make install)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (Debian: apt-get install chromium)")

ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    ctx = browser.new_context(viewport={"width": 1300, "height": 900})
    pg = ctx.new_page()
    pg.requests = []
    pg.on("request", lambda r: pg.requests.append(r.url))
    pg.origin = origin
    yield pg
    assert pg.requests, "the page made no request at all"
    foreign = [u for u in pg.requests if not u.startswith(origin + "/") and not u.startswith(("data:", "about:"))]
    assert not foreign, f"requests to other hosts: {foreign}"
    ctx.close()


def strongest_feature(runs_root, layer: str) -> int:
    con = sqlite3.connect(store_path(runs_root / "set" / layer))
    return con.execute("SELECT id FROM features ORDER BY fires DESC").fetchone()[0]


def test_feature_page_shows_highlighted_examples(page, runs_root):
    fid = strongest_feature(runs_root, "layer_01")
    page.goto(f"{page.origin}/#/feature/set%2Flayer_01/{fid}")
    page.wait_for_selector("#top-examples .ex")
    assert page.locator("#top-examples .ex").count() >= 1
    lit = page.locator("#top-examples .tok[style*='background']")
    assert lit.count() >= 1  # tokens coloured by activation
    assert page.locator("#top-examples .tok.at").count() >= 1  # the strongest token marked
    page.click("#next")
    page.wait_for_url(re.compile(rf".*/{fid + 1}$"))
    page.wait_for_selector("h1:has-text('feature #')")


def test_small_defects_of_the_feature_pages(page, runs_root):
    """Go-to refuses what is not a feature (no NaN page, no silent wrap); a dead feature's density reads as such;
    the runs page has no stray "null"."""
    page.goto(f"{page.origin}/#/feature/set%2Flayer_01/2")
    page.wait_for_selector("#goto")
    for typed in ("abc", "99999"):
        page.fill("#goto", typed)
        page.press("#goto", "Enter")
        page.wait_for_selector(f"#goto-error:has-text('no feature \"{typed}\"')")
        assert page.url.endswith("/2")
    page.fill("#goto", "5")
    page.press("#goto", "Enter")
    page.wait_for_url(re.compile(r".*/5$"))
    con = sqlite3.connect(store_path(runs_root / "wide"))
    dead = con.execute("SELECT id FROM features WHERE fires = 0").fetchone()[0]
    page.goto(f"{page.origin}/#/feature/wide/{dead}")
    page.locator("h1", has_text=re.compile(rf"wide — feature #{dead}\b")).wait_for()  # this page, not the last
    body = page.inner_text("#app")
    assert "0.0e+0" not in body and "never fired" in body
    page.goto(f"{page.origin}/#/feature/set%2Flayer_01/2")  # units on the logit effects, a y-axis on the histogram
    page.locator("h1", has_text=re.compile(r"layer_01 — feature #2\b")).wait_for()
    page.wait_for_selector("#logit-units")
    assert page.locator("#similar li a").count() == 16  # 8 nearest by decoder, 8 by encoder, each a link
    page.fill("#try-text", "the king sees a ship")  # a typed text, highlighted by this feature's activation
    page.click("#try-form button")
    page.wait_for_selector("#try-out .ex")
    assert "max " in page.inner_text("#try-out") and page.locator("#try-out .tok").count() >= 5
    assert "per unit of this feature's activation" in page.inner_text("#logit-units")
    assert int(page.text_content(".chart .y-max").replace(",", "")) >= 1
    page.fill("#search", "the")
    page.press("#search", "Enter")
    page.wait_for_selector("#search-count")
    assert re.match(r"\d+ features? match", page.inner_text("#search-count"))
    page.goto(f"{page.origin}/#/")
    page.wait_for_selector("h1:has-text('Runs')")
    assert "null" not in page.inner_text("#app")
    # a feature of a run without dashboards' data: the error says what to run, and leads back
    page.goto(f"{page.origin}/#/feature/sweep%2Ftranscoder-topk-k2-w32/0")
    page.wait_for_selector("#error")
    assert "transcoders features" in page.inner_text("#error")
    page.click("#back")
    page.wait_for_selector("h1:has-text('Runs')")


def test_labels_persist_across_a_reload(page, runs_root):
    page.goto(f"{page.origin}/#/feature/set%2Flayer_02/4")
    page.wait_for_selector("#label")
    page.fill("#label", "browser label")
    page.click("#label-form button")
    page.wait_for_selector("#saved:has-text('saved')")
    page.reload()
    page.wait_for_selector("#label")
    assert page.input_value("#label") == "browser label"
    con = sqlite3.connect(store_path(runs_root / "set" / "layer_02"))
    assert con.execute("SELECT label FROM labels WHERE feature = 4").fetchone()[0] == "browser label"


def test_blind_rating_completes_with_a_tally(page):
    page.goto(f"{page.origin}/#/rate")
    page.wait_for_selector("#rate-go")
    page.select_option("#run-a", "set/layer_00")
    page.select_option("#run-b", "set/layer_02")
    page.fill("#rate-n", "2")
    page.click("#rate-go")
    for i in range(4):
        page.wait_for_selector(f"h1:has-text('feature {i + 1} of 4')")
        assert "layer_0" not in page.inner_text("main")  # which run stays hidden
        page.click("#ans-yes" if i % 2 else "#ans-no")
    page.wait_for_selector("#tally")
    rows = page.locator("#tally tr")
    assert rows.count() == 3
    text = page.inner_text("#tally")
    assert "set/layer_00" in text and "set/layer_02" in text
    # the session is listed on the start page, and its link shows the results again
    page.click("text=start another")
    page.wait_for_selector("#rate-sessions")
    assert "set/layer_00 vs set/layer_02" in page.inner_text("#rate-sessions")
    page.locator("#rate-sessions a", has_text="results").first.click()
    page.wait_for_selector("#tally")


def test_circuit_graph_renders_and_a_node_shows_its_examples_in_place(page, server):
    page.goto(f"{page.origin}/#/graph/set%2Fgraphs%2Fking.json")
    page.wait_for_selector("#graph-svg circle.node")
    doc = json.loads(page.evaluate("fetch('/api/graph?path=set/graphs/king.json').then(r => r.text())"))
    feat = next(n for n in doc["nodes"] if n["feature_type"] == "cross layer transcoder")
    node = page.locator(f"circle.node[data-id='{feat['node_id']}']")
    if node.count() == 0:  # pruned at the default slider: show everything
        page.fill("#prune", "0")
        page.dispatch_event("#prune", "input")
    node = page.locator(f"circle.node[data-id='{feat['node_id']}']")
    node.dispatch_event("click", {"shiftKey": True})  # pin it, and look at the pinned subgraph alone
    assert f"{feat['layer']}:{feat['feature_index']}@{feat['ctx_idx']}" in page.inner_text("#pinned")
    page.check("#subgraph")
    assert page.locator("#graph-svg circle.node").count() == 1
    page.uncheck("#subgraph")
    node = page.locator(f"circle.node[data-id='{feat['node_id']}']")
    node.hover()  # details show on hover, with the node's strongest inputs and outputs
    info = page.inner_text("#node-info")
    assert feat["node_id"] in info
    n_in = sum(1 for link in doc["links"] if link["target"] == feat["node_id"])
    assert f"strongest inputs ({n_in})" in info and "strongest outputs (" in info
    node.dispatch_event("click")  # a click keeps them, with the feature's top examples, and stays on the graph
    page.wait_for_selector("#node-examples .ex")
    assert "#/graph/" in page.url and f"clickedId={feat['node_id']}" in page.url
    first = page.locator("#node-examples .ex .val").first.text_content()
    top = page.evaluate(f"fetch('/api/feature?run={feat['run']}&id={feat['feature_index']}').then(r => r.json())")
    assert float(first) == pytest.approx(top["top"][0]["act"], abs=1e-3)
    page.click("#open-feature")  # and the full page is one click away
    page.wait_for_url(re.compile(r".*#/feature/.*"))
    page.wait_for_selector(f"h1:has-text('feature #{feat['feature_index']}')")
    assert feat["run"] in page.inner_text("h1")


def test_pins_pruning_supernodes_and_zoom_survive_a_reload_from_the_url(page, runs_root):
    graph = runs_root / "set" / "graphs" / "king.json"
    before = graph.read_bytes()
    try:
        page.goto(f"{page.origin}/#/graph/set%2Fgraphs%2Fking.json")
        page.wait_for_selector("#graph-svg circle.node")
        page.fill("#prune", "0")
        page.dispatch_event("#prune", "input")
        doc = json.loads(graph.read_text())
        feats = [n["node_id"] for n in doc["nodes"] if n["feature_type"] == "cross layer transcoder"][:3]
        for fid in feats:
            page.locator(f"circle.node[data-id='{fid}']").dispatch_event("click", {"shiftKey": True})
        page.click("#sn-group")  # no name yet: it says so and groups nothing
        assert "name" in page.inner_text("#view-msg") and page.locator(".supernode").count() == 0
        page.fill("#sn-name", "royal things")
        page.click("#sn-group")
        assert page.locator(".supernode[data-name='royal things']").count() == 1
        for fid in feats:  # the members are drawn as the one supernode
            assert page.locator(f"circle.node[data-id='{fid}']").count() == 0
        assert page.locator("#pinned li").count() == 0 and "royal things" in page.inner_text("#supernodes")
        other = next(n["node_id"] for n in doc["nodes"] if n["feature_type"] == "cross layer transcoder"
                     and n["node_id"] not in feats)
        page.locator(f"circle.node[data-id='{other}']").dispatch_event("click", {"shiftKey": True})
        page.fill("#prune", "30")
        page.dispatch_event("#prune", "input")
        width = float(page.locator("#graph-svg").get_attribute("width"))
        page.click("#zoom-in")
        assert float(page.locator("#graph-svg").get_attribute("width")) == pytest.approx(width * 1.25, abs=1)
        url = page.url
        assert "supernodes=" in url and "pinnedIds=" in url and "prune=30" in url and "zoom=1.25" in url

        page.goto("about:blank")  # a fresh load of that link shows the same view
        page.goto(url)
        page.wait_for_selector(".supernode[data-name='royal things']")
        assert page.input_value("#prune") == "30"
        assert page.locator("#pinned li").count() == 1 and page.locator(f"circle.node[data-id='{other}']").count() == 1
        assert float(page.locator("#graph-svg").get_attribute("width")) == pytest.approx(width * 1.25, abs=1)
        page.locator(".supernode").dispatch_event("click")
        assert "supernode “royal things”: 3 nodes" in page.inner_text("#node-info")

        page.click("#save-view")  # saved with the graph: a link without a view opens with them
        page.locator("#view-msg", has_text="saved with the graph").wait_for()
        saved = json.loads(graph.read_text())["qParams"]
        assert saved["supernodes"] == [["royal things", *feats]] and saved["pinnedIds"] == [other]
        page.goto("about:blank")
        page.goto(f"{page.origin}/#/graph/set%2Fgraphs%2Fking.json")
        page.wait_for_selector(".supernode[data-name='royal things']")
        assert page.locator("#pinned li").count() == 1
    finally:
        graph.write_bytes(before)


def trace_from_prompt_box(page, prompt: str, url: str, target: str = "", set_name: str = "") -> None:
    """Type a prompt (and target) into the circuit page's box, trace it, and wait for the graph to be drawn."""
    page.wait_for_selector("#c-go")
    if set_name:
        page.select_option("#c-set", set_name)
    page.fill("#c-prompt", prompt)
    if target:
        page.fill("#c-target", target)
    page.click("#c-go")
    page.wait_for_url(re.compile(url))
    page.wait_for_selector("#graph-svg circle.node")
    assert prompt in page.inner_text("h1")


def test_graph_page_has_a_legend_labelled_logits_and_a_panel_in_view(browser, server):
    """At 1280 x 800 the details panel sits beside the graph (not below it), the legend names each node kind the
    graph has, and every logit node drawn carries its token and probability."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    try:
        page.goto(f"http://127.0.0.1:{server.server_address[1]}/#/graph/set%2Fgraphs%2Fking.json")
        page.wait_for_selector("#graph-svg circle.node")
        box = page.locator("#node-info").bounding_box()
        assert box["x"] + box["width"] <= 1280 and box["y"] < 800
        doc = json.loads(page.evaluate("fetch('/api/graph?path=set/graphs/king.json').then(r => r.text())"))
        kinds = {n["feature_type"] for n in doc["nodes"]}
        assert page.locator("#legend .chip").count() == len(kinds)
        logits = [n for n in doc["nodes"] if n["feature_type"] == "logit"]
        drawn = page.locator("#graph-svg circle.node[fill='#f08c00']").count()
        assert logits and page.locator("#graph-svg .logit-label").count() == drawn > 0
        assert "%" in page.locator("#graph-svg .logit-label").first.text_content()
        assert_no_two_nodes_overlap(page, len(doc["nodes"]))
        rows = page.locator("#graph-rows text").all_text_contents()
        assert "L0" in rows
        n_layers = 1 + max(int(n["layer"]) for n in doc["nodes"] if n["feature_type"] == "cross layer transcoder")
        assert f"L{n_layers}" not in rows  # no block rows past the model's last layer
    finally:
        ctx.close()


def assert_no_two_nodes_overlap(page, n_nodes: int) -> None:
    """With pruning off every node is drawn, and no two circles overlap."""
    page.fill("#prune", "0")
    page.dispatch_event("#prune", "input")
    circles = page.evaluate("""[...document.querySelectorAll('#graph-svg circle.node')].map(
        c => [+c.getAttribute('cx'), +c.getAttribute('cy'), +c.getAttribute('r')])""")
    assert len(circles) == n_nodes
    circles.sort()
    for i, (x1, y1, r1) in enumerate(circles):
        for x2, y2, r2 in circles[i + 1:]:
            if x2 - x1 > r1 + r2:  # sorted by x: nothing further right can touch this one
                break
            assert (x1 - x2) ** 2 + (y1 - y2) ** 2 >= (r1 + r2) ** 2 - 1e-6, ((x1, y1), (x2, y2))


def test_a_real_default_model_graph_has_no_overlapping_nodes_and_names_its_logits(browser, server, runs_root):
    """The default model (SmolLM2-135M, 30 layers) on "The capital of France is", with (random) transcoders at
    every layer: hundreds of feature nodes, every one drawn clear of the others, each logit labelled."""
    import sys
    from pathlib import Path

    from transcoders.circuits import Replacement
    from transcoders.circuits.api import CircuitConfig, run_circuit
    from transcoders.models import load_model
    from transcoders.models.named import NAMED_MODELS

    if not (NAMED_MODELS["default"].installed or NAMED_MODELS["default"].converted):
        pytest.skip("the default model is not installed here (`transcoders models --install default`)")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "circuits"))
    from circuit_helpers import random_set

    lm = load_model("default")
    out = runs_root / "smol" / "graphs" / "france.json"
    cfg = CircuitConfig(set=str(runs_root / "smol"), prompt="The capital of France is", mode="graph", out=str(out),
                        node_threshold=1.0, edge_threshold=1.0)  # unpruned: every node the page can draw
    _, _, doc = run_circuit(cfg, rep=Replacement(lm, random_set(lm, width=256, k=8, skip_layers=())))
    feats = [n for n in doc["nodes"] if n["feature_type"] == "cross layer transcoder"]
    assert len(feats) > 100 and len({n["layer"] for n in feats}) > 20
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    try:
        page.goto(f"http://127.0.0.1:{server.server_address[1]}/#/graph/smol%2Fgraphs%2Ffrance.json")
        page.wait_for_selector("#graph-svg circle.node")
        assert_no_two_nodes_overlap(page, len(doc["nodes"]))
        logits = [n for n in doc["nodes"] if n["feature_type"] == "logit"]
        labels = page.locator("#graph-svg .logit-label").all_text_contents()
        assert len(labels) == len(logits) > 1 and all("%" in t for t in labels)
        assert any("Paris" in t for t in labels), labels  # the model's top guess, named on the graph
        box = page.locator("#node-info").bounding_box()
        assert box["x"] + box["width"] <= 1280 and box["y"] < 800
        # zoomed in, the graph is wider than the screen: a link to a node far right opens with that node in view
        far = max(feats, key=lambda n: (int(n["ctx_idx"]), int(n["layer"])))
        page.goto("about:blank")
        page.goto(f"http://127.0.0.1:{server.server_address[1]}/#/graph/smol%2Fgraphs%2Ffrance.json"
                  f"?clickedId={far['node_id']}&zoom=3")
        page.wait_for_selector("#node-examples, #node-info")
        wrap = page.locator("#graph-wrap").bounding_box()
        assert page.locator("#graph-svg").bounding_box()["width"] > wrap["width"]
        node = page.locator(f"circle.node[data-id='{far['node_id']}']").bounding_box()
        cx, cy = node["x"] + node["width"] / 2, node["y"] + node["height"] / 2
        assert wrap["x"] <= cx <= wrap["x"] + wrap["width"] and wrap["y"] <= cy <= wrap["y"] + wrap["height"]
        # scrolled far right, the row names are still at the left edge of what is in view
        assert page.evaluate("document.getElementById('graph-wrap').scrollLeft") > 0
        rows = page.locator("#graph-rows").bounding_box()
        assert abs(rows["x"] - wrap["x"]) < 3, (rows, wrap)
        assert "L29" in page.locator("#graph-rows text").all_text_contents()
    finally:
        ctx.close()


def test_a_prompt_typed_in_the_viewer_is_traced_and_drawn(page):
    page.goto(f"{page.origin}/#/graphs")
    trace_from_prompt_box(page, "a cat and a dog", r".*a-cat-and-a-dog-paths-logit-7-[0-9a-f]{8}\.json$", target="logit:#7")


def test_a_logit_difference_is_named_whole_on_the_graph(page):
    """A difference target's node reads `'a'−'b'` (both tokens, not a label cut after twelve characters)."""
    page.goto(f"{page.origin}/#/graphs")
    trace_from_prompt_box(page, "a cat and a dog", r".*a-cat-and-a-dog-paths-logit-7-8-[0-9a-f]{8}\.json$",
                          target="logit:#7-#8")
    label = page.locator("#graph-svg .logit-label").first.text_content()
    assert "−" in label and "logit(" not in label and "…" not in label, label
    assert "%" not in label  # a difference has no probability


def test_a_partial_set_is_offered_by_the_circuit_picker_and_traces(page):
    """A set of some layers only (here 3 and 4 of a 5-layer model, like `--layers 8,20` of the default model)."""
    page.goto(f"{page.origin}/#/graphs")
    page.wait_for_selector("#c-set")
    assert sorted(page.locator("#c-set option").all_inner_texts()) == ["partial", "set"]
    trace_from_prompt_box(page, "a king and a ship", r".*partial%2Fgraphs%2Fa-king-and-a-ship-paths-top-[0-9a-f]{8}\.json$",
                          set_name="partial")


def test_concepts_page_ranks_features_from_typed_texts(page, tiny_texts):
    page.goto(f"{page.origin}/#/run/set%2Flayer_01")
    page.click("#concepts-link")
    page.wait_for_selector("#concepts-form")
    page.fill("#positive", "\n".join(tiny_texts[:4]))
    page.fill("#negative", "\n".join(tiny_texts[4:8]))
    page.click("#concepts-form button")
    page.wait_for_selector("#concepts-out table")
    rows = page.locator("#concepts-out table tr")
    assert rows.count() == 21  # the header and 20 features
    page.click("#concepts-out table tr:nth-child(2) a")
    page.wait_for_selector("#top-examples")
    page.goto(f"{page.origin}/#/concepts/set%2Flayer_01")
    page.wait_for_selector("#concepts-form")
    page.click("#concepts-form button")  # nothing typed: the server's one-line reason
    page.wait_for_selector("#concepts-out .error:has-text('positive')")


def test_feature_page_shows_llm_explanations_as_the_label(page, runs_root, tiny_lm):
    run = runs_root / "set" / "layer_00"
    run_interp([run], InterpConfig(scores="llm", features=1, top=3, quantiles=1, test=2),
               llm=LocalLLM(tiny_lm, name="local:tiny-browser"), progress=False)
    con = sqlite3.connect(store_path(run))
    fid, expl = con.execute("SELECT feature, explanation FROM interp WHERE llm = 'local:tiny-browser'").fetchone()
    labelled = con.execute("SELECT 1 FROM labels WHERE feature = ? AND label != ''", (fid,)).fetchone()
    page.goto(f"{page.origin}/#/feature/set%2Flayer_00/{fid}")
    page.wait_for_selector("#explanations")
    def words(text):  # the browser collapses runs of spaces
        return " ".join(text.split())

    assert words(expl) in words(page.inner_text("#explanations")) and "local:tiny-browser" in page.inner_text("#explanations")
    if not labelled:  # no person's label: the explanation stands in, marked as automatic
        assert words(expl) in words(page.inner_text("#auto-label")) and "(auto)" in page.inner_text("#auto-label")


def test_a_graph_whose_layers_have_no_dashboards_data_builds_them_in_place(page, bare_set):
    bare_set("bare-browser")
    page.goto(f"{page.origin}/#/graph/bare-browser%2Fgraphs%2Fship.json")
    page.wait_for_selector("#build-features")
    assert "2 of the 2 layers" in page.inner_text("#build-card")
    page.click("#build-features")
    page.wait_for_selector("#build-done", timeout=120_000)  # built, and the graph drawn again
    page.wait_for_selector("#graph-svg circle.node")
