"""The viewer's HTTP API on a real (tiny) runs folder: content against the stores, labels, blind rating, graphs, and
every refusal: path traversal, a public bind without a token, missing tokens, malformed requests."""

from __future__ import annotations

import json
import re
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from transcoders.cli import main
from transcoders.features import store_path
from transcoders.interp import InterpConfig, LocalLLM, run_interp
from transcoders.viewer import ViewerError, make_server, serve_in_thread
from transcoders.viewer import data as D


def call(srv, path, body=None, headers=None, raw=None):
    url = f"http://127.0.0.1:{srv.server_address[1]}{path}"
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def get_json(srv, path, body=None, **kw):
    status, _, data = call(srv, path, body, **kw)
    return status, json.loads(data)


def test_pages_and_assets_are_local(server):
    status, headers, html = call(server, "/")
    assert status == 200 and b"/static/app.js" in html
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert b"http://" not in html and b"https://" not in html  # nothing to fetch from another host
    for asset in ("app.js", "style.css"):
        status, _, body = call(server, f"/static/{asset}")
        body = body.replace(b"http://www.w3.org/2000/svg", b"")  # the SVG namespace is a name, not a request
        assert status == 200 and b"https://" not in body and b"http://" not in body


def test_runs_and_feature_pages_match_the_stores(server, runs_root):
    status, d = get_json(server, "/api/runs")
    assert status == 200
    paths = {r["path"] for r in d["runs"]}
    assert {"set/layer_00", "set/layer_01", "set/layer_02"} <= paths
    assert all(r["store"]["complete"] for r in d["runs"] if r["path"].startswith("set/"))
    assert all(r["store"] is None for r in d["runs"] if r["path"].startswith("sweep/"))  # no store collected there
    assert "set/graphs/king.json" in [g["path"] for g in d["graphs"]]
    con = sqlite3.connect(store_path(runs_root / "set" / "layer_01"))
    fid, fires, act_max = con.execute("SELECT id, fires, act_max FROM features WHERE fires > 0 ORDER BY fires DESC").fetchone()
    tokens = json.loads(con.execute("SELECT value FROM meta WHERE key = 'tokens_done'").fetchone()[0])
    status, f = get_json(server, f"/api/feature?run=set/layer_01&id={fid}")
    assert status == 200
    assert f["fires"] == fires and f["density"] == pytest.approx(fires / tokens)
    assert f["top"][0]["act"] == pytest.approx(act_max, rel=1e-3)
    ex = f["top"][0]
    assert ex["acts"][ex["at"]] == pytest.approx(ex["act"], rel=1e-2)  # the highlighted token is the strongest
    assert len(f["top_logits"]) == 10 and all(isinstance(r["token"], str) for r in f["top_logits"])
    assert sum(len(g["examples"]) for g in f["quantiles"]) == con.execute(
        "SELECT COUNT(*) FROM examples WHERE feature = ? AND kind = 'sample'", (fid,)).fetchone()[0]


def test_random_lands_on_a_feature_that_fired(server, runs_root):
    con = sqlite3.connect(store_path(runs_root / "wide"))
    live = {i for (i,) in con.execute("SELECT id FROM features WHERE fires > 0")}
    dead = con.execute("SELECT COUNT(*) FROM features WHERE fires = 0").fetchone()[0]
    assert live and dead  # the tiny store has both, so the check has teeth
    for _ in range(20):
        status, r = get_json(server, "/api/random?run=wide")
        assert status == 200 and r["live"] and r["id"] in live


def test_search_ranks_by_relevance_and_says_how_many_matched(server, runs_root):
    """A token found as the activating token of many features: each match is explained; a feature labelled with
    the word ranks first; scores never increase down the list; a cut list says how many matched in all."""
    con = sqlite3.connect(store_path(runs_root / "set" / "layer_01"))
    tokens = {}
    for ctx, pos in con.execute("SELECT context, pos FROM examples WHERE kind = 'top'"):
        blob = con.execute("SELECT tokens FROM contexts WHERE id = ?", (ctx,)).fetchone()[0]
        t = int.from_bytes(blob[4 * pos: 4 * pos + 4], "little")
        tokens[t] = tokens.get(t, 0) + 1
    text = {t: con.execute("SELECT text FROM vocab WHERE id = ?", (t,)).fetchone()[0].strip() for t in tokens}
    word = text[max((t for t in tokens if text[t].isalpha() and len(text[t]) > 1), key=tokens.get)]
    firing = D.search(runs_root, "set/layer_01", word)
    assert firing["total"] >= 3 and all(any("fires" in w or "it" in w for w in r["why"]) for r in firing["results"])
    quiet = next(i for i in range(48) if i not in {r["id"] for r in firing["results"]})
    status, _ = get_json(server, "/api/label", {"run": "set/layer_01", "id": quiet, "label": f"about {word}", "note": ""})
    assert status == 200
    _, s = get_json(server, f"/api/search?{urllib.parse.urlencode({'run': 'set/layer_01', 'q': word})}")
    assert s["results"][0]["id"] == quiet and s["results"][0]["why"][0] == f"label: about {word}"
    scores = [r["score"] for r in s["results"]]
    assert scores == sorted(scores, reverse=True) and s["total"] == firing["total"] + 1
    cut = D.search(runs_root, "set/layer_01", word, limit=2)
    assert len(cut["results"]) == 2 and cut["total"] == s["total"]


def test_similar_features_are_the_nearest_directions(server, runs_root):
    from transcoders.dictionary import load_dictionary

    d = load_dictionary(runs_root / "set" / "layer_01")
    _, f = get_json(server, "/api/feature?run=set/layer_01&id=7")
    for name, w in (("decoder", d.W_dec), ("encoder", d.W_enc)):
        unit = w.detach() / w.detach().norm(dim=1, keepdim=True)
        cos = unit @ unit[7]
        cos[7] = -2
        best = cos.topk(8)
        got = f["similar"][name]
        assert [r["id"] for r in got] == best.indices.tolist()
        assert [r["cos"] for r in got] == pytest.approx(best.values.tolist(), abs=1e-4)


def test_a_typed_text_gives_the_features_activation_on_each_token(server, runs_root, tiny_model_dir):
    import torch

    from transcoders.data.packing import text_ids
    from transcoders.dictionary import load_dictionary
    from transcoders.models import capture, load_model

    text = "the king sees a ship and the queen sees a dog"
    d = load_dictionary(runs_root / "set" / "layer_01")
    lm = load_model(tiny_model_dir)
    ids = text_ids(lm.tokenizer, text)
    with torch.no_grad():
        z = d.encode(capture(lm, torch.tensor([ids]), ["blocks.1.mlp.in"])["blocks.1.mlp.in"])[0]
    fid = int(z[1:].max(0).values.argmax())  # the feature firing hardest anywhere in the text
    status, r = get_json(server, "/api/activate", {"run": "set/layer_01", "id": fid, "text": text})
    assert status == 200, r
    assert len(r["tokens"]) == len(ids) and "".join(r["tokens"][1:]).strip() == text
    assert r["acts"][0] == 0  # the BOS position, as the store has it
    assert r["acts"][1:] == pytest.approx(z[1:, fid].tolist(), abs=1e-3)
    assert r["max"] > 0 and r["acts"][r["at"]] == pytest.approx(r["max"], abs=1e-3)
    status, err = get_json(server, "/api/activate", {"run": "set/layer_01", "id": 10**6, "text": text})
    assert status == 400 and "no feature" in err["error"]
    status, err = get_json(server, "/api/activate", {"run": "set/layer_01", "id": 1, "text": "  "})
    assert status == 400


def test_a_feature_page_lists_its_frequent_tokens_and_the_graphs_it_is_in(server, runs_root):
    doc = json.loads((runs_root / "set" / "graphs" / "king.json").read_text())
    node = next(n for n in doc["nodes"] if n["feature_type"] == "cross layer transcoder")
    layer, fid, _ = (int(x) for x in node["node_id"].split("_"))
    _, f = get_json(server, f"/api/feature?run=set/layer_{layer:02d}&id={fid}")
    assert "set/graphs/king.json" in [g["path"] for g in f["graphs"]]
    con = sqlite3.connect(store_path(runs_root / "set" / f"layer_{layer:02d}"))
    counts = {}
    for ctx, pos in con.execute("SELECT context, pos FROM examples WHERE feature = ?", (fid,)):
        blob = con.execute("SELECT tokens FROM contexts WHERE id = ?", (ctx,)).fetchone()[0]
        t = int.from_bytes(blob[4 * pos: 4 * pos + 4], "little")
        counts[t] = counts.get(t, 0) + 1
    got = {t["id"]: t["count"] for t in f["frequent_tokens"]}
    assert got and all(counts[t] == c for t, c in got.items())
    assert min(got.values()) >= max((c for t, c in counts.items() if t not in got), default=0)
    # a feature in no graph lists none
    in_graph = {(int(n["node_id"].split("_")[0]), int(n["node_id"].split("_")[1])) for n in doc["nodes"]
                if n["feature_type"] == "cross layer transcoder"}
    other = next(i for i in range(48) if (layer, i) not in in_graph)
    _, f = get_json(server, f"/api/feature?run=set/layer_{layer:02d}&id={other}")
    assert f["graphs"] == []


def test_graph_feature_nodes_carry_their_labels(server, runs_root):
    doc = json.loads((runs_root / "set" / "graphs" / "king.json").read_text())
    node = next(n for n in doc["nodes"] if n["feature_type"] == "cross layer transcoder")
    layer, fid, _ = (int(x) for x in node["node_id"].split("_"))
    status, _ = get_json(server, "/api/label", {"run": f"set/layer_{layer:02d}", "id": fid, "label": "royal nouns",
                                                "note": ""})
    assert status == 200
    _, g = get_json(server, "/api/graph?path=set/graphs/king.json")
    labelled = [n for n in g["nodes"] if n.get("label") == "royal nouns"]
    assert labelled and all(n["node_id"].startswith(f"{layer}_{fid}_") and not n.get("label_auto") for n in labelled)


def test_labels_persist(server, runs_root):
    status, r = get_json(server, "/api/label", {"run": "set/layer_00", "id": 3, "label": "king tokens", "note": "n"})
    assert status == 200 and r["ok"]
    _, f = get_json(server, "/api/feature?run=set/layer_00&id=3")
    assert f["label"] == "king tokens" and f["note"] == "n"
    con = sqlite3.connect(store_path(runs_root / "set" / "layer_00"))
    assert con.execute("SELECT label FROM labels WHERE feature = 3").fetchone()[0] == "king tokens"
    _, s = get_json(server, "/api/search?run=set/layer_00&q=king")
    assert any(x["id"] == 3 for x in s["results"])


def test_blind_rating_hides_the_run_and_tallies(server):
    status, s = get_json(server, "/api/rating/start", {"runs": ["set/layer_00", "set/layer_02"], "n": 3})
    assert status == 200 and s["total"] == 6
    verdicts = ["yes", "no", "maybe", "yes", "yes", "no"]
    _, item = get_json(server, f"/api/rating?session={s['session']}")
    for i, v in enumerate(verdicts):
        assert not item["done"] and item["index"] == i
        blob = json.dumps(item)
        assert "layer_0" not in blob and '"act"' not in blob  # which run, and the activation values, stay hidden
        shown = [(e["context"], e["pos"]) for e in item["examples"]]
        assert len(shown) == len(set(shown)) > 4  # the top 4 (this store keeps 4), then others lower down, none twice
        _, item = get_json(server, "/api/rating/answer", {"session": s["session"], "index": i, "interpretable": v,
                                                          "single_token": i % 2 == 0})
    assert item["done"]
    tally = item["tally"]
    assert [t["run"] for t in tally] == ["set/layer_00", "set/layer_02"]
    assert sum(t["yes"] for t in tally) == 3 and sum(t["no"] for t in tally) == 2 and sum(t["maybe"] for t in tally) == 1
    assert all(t["rated"] == 3 for t in tally) and sum(t["single_token"] for t in tally) == 3
    for t in tally:  # shares with Wilson 95% intervals (2 of 3: 0.667 [0.208, 0.939])
        assert t["yes_share"][0] == pytest.approx(t["yes"] / 3)
        assert t["yes_or_maybe_share"][0] == pytest.approx((t["yes"] + t["maybe"]) / 3)
    assert D.wilson(2, 3) == pytest.approx([2 / 3, 0.2077, 0.9385], abs=1e-4)
    assert D.wilson(0, 5)[1] == 0 and D.wilson(5, 5)[2] == 1
    status, err = get_json(server, "/api/rating/answer", {"session": s["session"], "index": 6, "interpretable": "yes"})
    assert status == 409 and "error" in err
    # earlier sessions are listed, newest first; an unfinished one shows its progress but no tally
    time.sleep(0.01)
    _, s2 = get_json(server, "/api/rating/start", {"runs": ["set/layer_02", "set/layer_00"], "n": 2})
    get_json(server, "/api/rating/answer", {"session": s2["session"], "index": 0, "interpretable": "no"})
    _, listed = get_json(server, "/api/ratings")
    by_id = {x["session"]: x for x in listed["sessions"]}
    order = [x["session"] for x in listed["sessions"]]
    assert order.index(s2["session"]) < order.index(s["session"])
    assert by_id[s["session"]]["done"] and by_id[s["session"]]["tally"] == tally
    assert by_id[s2["session"]] | {"started": 0} == {"session": s2["session"], "runs": ["set/layer_02", "set/layer_00"],
                                                     "rated": 1, "total": 4, "started": 0, "done": False}


def test_graphs_link_feature_nodes_to_their_runs(server):
    status, g = get_json(server, "/api/graph?path=set/graphs/king.json")
    assert status == 200
    feats = [n for n in g["nodes"] if n["feature_type"] == "cross layer transcoder"]
    assert feats
    for n in feats:
        assert n["run"] == f"set/layer_{int(n['layer']):02d}"
        assert n["node_id"] == f"{n['layer']}_{n['feature_index']}_{n['ctx_idx']}"
        status, f = get_json(server, f"/api/feature?run={n['run']}&id={n['feature_index']}")
        assert status == 200


def test_a_feature_brief_is_the_feature_pages_top_examples(server):
    """What the graph's side panel shows without leaving the graph: the same examples as the feature page."""
    _, g = get_json(server, "/api/graph?path=set/graphs/king.json")
    n = next(n for n in g["nodes"] if n["feature_type"] == "cross layer transcoder")
    status, brief = get_json(server, f"/api/feature/brief?run={n['run']}&id={n['feature_index']}")
    _, page = get_json(server, f"/api/feature?run={n['run']}&id={n['feature_index']}")
    assert status == 200 and brief["top"]
    assert [e["act"] for e in brief["top"]] == [e["act"] for e in page["top"][: len(brief["top"])]]
    assert brief["density"] == page["density"] and brief["label"] == page["label"]


def test_pins_and_supernodes_are_saved_with_the_graph(server, runs_root):
    path = runs_root / "set" / "graphs" / "king.json"
    before = path.read_bytes()
    try:
        _, g = get_json(server, "/api/graph?path=set/graphs/king.json")
        ids = [n["node_id"] for n in g["nodes"] if n["feature_type"] == "cross layer transcoder"][:3]
        status, out = get_json(server, "/api/graph/view", {"path": "set/graphs/king.json", "pinnedIds": [ids[2]],
                                                           "supernodes": [[" royalty ", ids[0], ids[1]]]})
        assert status == 200, out
        doc = json.loads(path.read_text())
        assert doc["qParams"]["pinnedIds"] == [ids[2]] and doc["qParams"]["supernodes"] == [["royalty", ids[0], ids[1]]]
        assert doc["qParams"]["linkType"] == "both"  # circuit-tracer's other view fields are kept
        old = json.loads(before)
        assert doc["nodes"] == old["nodes"] and doc["links"] == old["links"] and doc["metadata"] == old["metadata"]
        _, g = get_json(server, "/api/graph?path=set/graphs/king.json")
        assert g["qParams"]["supernodes"] == [["royalty", ids[0], ids[1]]]
        for body, says in [
            ({"pinnedIds": ["nope"]}, "node ids of this graph"),
            ({"supernodes": [["one", ids[0]]]}, "at least two nodes"),
            ({"supernodes": [["", ids[0], ids[1]]]}, "a name of 1-80"),
            ({"supernodes": [["a", ids[0], "nope"]]}, "does not have"),
            ({"supernodes": [["a", ids[0], ids[1]], ["b", ids[1], ids[2]]]}, "one supernode only"),
            ({"path": "set/layer_00/config.json"}, "not a graph"),
        ]:
            status, err = get_json(server, "/api/graph/view", {"path": "set/graphs/king.json", **body})
            assert status in (400, 404) and says in err["error"], (body, err)
        assert json.loads(path.read_text())["qParams"]["supernodes"] == [["royalty", ids[0], ids[1]]]  # refused: unchanged
    finally:
        path.write_bytes(before)


def test_dashboards_data_for_a_graphs_set_is_built_from_the_viewer(server, runs_root, bare_set):
    bare_set("bare")
    _, g = get_json(server, "/api/graph?path=bare/graphs/ship.json")
    st = g["stores"]
    assert st["set"] == "bare" and sorted(st["missing"]) == ["bare/layer_03", "bare/layer_04"]
    assert not st["build"]["running"] and st["build"]["tokens_done"] == 0
    feat = next(n for n in g["nodes"] if n["feature_type"] == "cross layer transcoder")
    status, err = get_json(server, f"/api/feature/brief?run={feat['run']}&id={feat['feature_index']}")
    assert status == 404 and "transcoders features" in err["error"]

    status, b = get_json(server, "/api/features/build", {"set": "bare", "tokens": 512})
    assert status == 200 and b["runs"] == 2 and b["tokens"] == 512
    for _ in range(600):
        _, b = get_json(server, "/api/features/build?set=bare")
        if not b["running"]:
            break
        time.sleep(0.2)
    assert not b["running"] and not b["error"] and b["tokens_done"] >= 512
    _, g = get_json(server, "/api/graph?path=bare/graphs/ship.json")
    assert g["stores"]["missing"] == []
    status, brief = get_json(server, f"/api/feature/brief?run={feat['run']}&id={feat['feature_index']}")
    assert status == 200 and brief["top"]  # a feature in the graph fired, so it has examples now
    # one pass for the set, on the corpus it was trained on: the same store `transcoders features` writes
    con = sqlite3.connect(store_path(runs_root / "bare" / "layer_03"))
    meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
    con.close()
    trained = json.loads((runs_root / "partial" / "train_config.json").read_text())
    assert json.loads(meta["corpus"]) == trained["corpus"]
    for body, says in [({"set": "bare", "tokens": 1}, "between 256"), ({"set": "nope"}, "does not exist")]:
        status, err = get_json(server, "/api/features/build", body)
        assert status in (400, 404) and says in err["error"]


@pytest.mark.parametrize("path,status,says", [
    ("/api/feature?run=../../etc&id=1", 403, "outside the runs folder"),
    ("/api/run?run=..", 403, "outside the runs folder"),
    ("/api/graph?path=../../x.json", 403, "outside the runs folder"),
    ("/api/file?path=../other/x.png", 403, "outside the runs folder"),
    ("/api/feature?run=set/%2e%2e/%2e%2e/%2e%2e&id=0", 403, "outside the runs folder"),
    ("/api/feature?run=/etc&id=1", 400, "relative to the runs folder"),
    ("/static/../server.py", 404, "no such"),
    ("/static/%2e%2e/server.py", 404, "no such"),
    ("/api/graph?path=set/layer_00/config.json", 400, "not a graph"),
    ("/api/file?path=set/layer_00/config.json", 404, "not an image"),
])
def test_paths_never_leave_the_runs_folder(server, path, status, says):
    got, _, body = call(server, path)
    assert got == status, (path, got, body)
    assert says in json.loads(body)["error"]


@pytest.mark.parametrize("path,body,raw,status", [
    ("/api/label", None, b"{not json", 400),
    ("/api/label", None, b"[1, 2]", 400),
    ("/api/label", {"run": "set/layer_00", "id": "x", "label": "a"}, None, 400),
    ("/api/label", {"run": "set/layer_00", "id": 10**6, "label": "a"}, None, 404),
    ("/api/label", {"run": 5, "id": 1}, None, 400),
    ("/api/rating/start", {"runs": ["set/layer_00"], "n": 2}, None, 400),
    ("/api/rating/answer", {"session": "../../x", "index": 0, "interpretable": "yes"}, None, 400),
    ("/api/nothing", {}, None, 404),
])
def test_malformed_requests_get_4xx_and_the_server_goes_on(server, path, body, raw, status):
    got, _, data = call(server, path, body, raw=raw)
    assert got == status and "error" in json.loads(data)
    assert call(server, "/api/runs")[0] == 200
    got, _, _ = call(server, "/api/feature?run=set/layer_00&id=abc")
    assert got == 400


def test_public_bind_needs_a_token(runs_root):
    with pytest.raises(ViewerError, match="token"):
        make_server(runs_root, host="0.0.0.0", port=0)
    with pytest.raises(ViewerError, match="does not exist"):
        make_server(runs_root / "nowhere", port=0)
    srv = make_server(runs_root, host="127.0.0.1", port=0, token="s3cret")
    serve_in_thread(srv)
    try:
        assert call(srv, "/api/runs")[0] == 401
        assert call(srv, "/api/runs", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert call(srv, "/api/runs", headers={"Authorization": "Bearer s3cret"})[0] == 200
        assert call(srv, "/api/runs", headers={"Cookie": "tc_token=s3cret"})[0] == 200

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *a, **k):
                return None

        opener = urllib.request.build_opener(NoRedirect)
        try:
            opener.open(f"http://127.0.0.1:{srv.server_address[1]}/?token=s3cret")
            raise AssertionError("expected a redirect")
        except urllib.error.HTTPError as e:
            assert e.code == 303 and "tc_token=s3cret" in e.headers["Set-Cookie"] and "HttpOnly" in e.headers["Set-Cookie"]
    finally:
        srv.shutdown()
        srv.server_close()


def test_cli_refuses_a_public_host_without_token(capsys, runs_root):

    assert main(["serve", str(runs_root), "--host", "0.0.0.0", "--port", "0"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "--token" in err[0]


def test_a_circuit_computed_from_the_viewer_opens_as_a_graph(server, runs_root):
    status, r = get_json(server, "/api/graph/compute", {"set": "set", "prompt": "the king sees a dog", "target": "logit:#5"})
    assert status == 200, r
    assert re.fullmatch(r"set/graphs/the-king-sees-a-dog-paths-logit-5-[0-9a-f]{8}\.json", r["path"])
    assert (runs_root / r["path"]).is_file()
    assert "strongest paths" in r["report"]
    status, g = get_json(server, f"/api/graph?path={r['path']}")
    assert status == 200 and "the king sees a dog" in g["metadata"]["prompt"] and g["metadata"]["info"]["mode"] == "paths"
    _, d = get_json(server, "/api/runs")
    assert "set" in d["sets"] and r["path"] in [x["path"] for x in d["graphs"]]
    # another target on the same prompt is another graph: both are kept, and the list tells them apart
    status, r2 = get_json(server, "/api/graph/compute", {"set": "set", "prompt": "the king sees a dog", "target": "logit:#6"})
    assert status == 200 and r2["path"] != r["path"] and (runs_root / r["path"]).is_file()
    _, d = get_json(server, "/api/runs")
    listed = {g["path"]: g for g in d["graphs"]}
    assert listed[r2["path"]]["targets"] != listed[r["path"]]["targets"]
    assert listed[r["path"]]["mode"] == "paths" and listed[r["path"]]["settings"]["depth"] == 3
    assert listed[r["path"]]["prompt"].endswith("the king sees a dog") and listed[r["path"]]["date"]
    status, err = get_json(server, "/api/graph/compute", {"set": "set", "prompt": "the king", "target": "logit:nonsense words"})
    assert status == 400 and "token" in err["error"]
    status, err = get_json(server, "/api/graph/compute", {"set": "../..", "prompt": "x"})
    assert status == 403


def test_a_partial_set_is_a_set_and_its_graphs_link_to_its_layers(server, runs_root):
    """Layers 3 and 4 of a 5-layer model (like `--layers 8,20`): listed as a set, traced like one, and its graph's
    feature nodes point at its own layer_03/layer_04 runs."""
    _, d = get_json(server, "/api/runs")
    assert {"partial", "set"} <= set(d["sets"]) and not {"sweep", "wide"} & set(d["sets"])  # a sweep is no set
    assert {"partial/layer_03", "partial/layer_04"} <= {r["path"] for r in d["runs"]}
    assert main(["circuit", "--set", str(runs_root / "partial"), "--prompt", "the king sees", "--mode", "graph",
                 "--node-threshold", "1", "--edge-threshold", "1", "--quiet"]) == 0
    (made,) = (runs_root / "partial" / "graphs").glob("the-king-sees-graph-top-*.json")
    status, g = get_json(server, f"/api/graph?path=partial/graphs/{made.name}")
    assert status == 200, g
    feats = [n for n in g["nodes"] if n["feature_type"] == "cross layer transcoder"]
    assert feats and {int(n["layer"]) for n in feats} <= {3, 4}
    assert all(n["run"] == f"partial/layer_{int(n['layer']):02d}" for n in feats)
    assert all(n["node_id"] == f"{n['layer']}_{n['feature_index']}_{n['ctx_idx']}" for n in feats)


def test_sweeps_are_listed_with_their_pareto_plots(server, runs_root):
    import csv

    _, d = get_json(server, "/api/runs")
    (sweep,) = d["sweeps"]
    assert sweep["path"] == "sweep" and sorted(sweep["plots"]) == ["pareto_ce.png", "pareto_fvu.png"]
    assert sweep["rows"] == list(csv.DictReader(open(runs_root / "sweep" / "results.csv")))
    status, headers, png = call(server, "/api/file?path=sweep/pareto_ce.png")
    assert status == 200 and headers["Content-Type"] == "image/png" and png[:8] == b"\x89PNG\r\n\x1a\n"


def test_llm_explanations_show_label_and_search(server, runs_root, tiny_lm):
    """`transcoders interp` (the tiny random model as explainer) on one run: its feature pages show the
    explanations and use them as labels, search finds them, the run page shows the scores."""
    run = runs_root / "set" / "layer_02"
    run_interp([run], InterpConfig(scores="llm", features=2, top=3, quantiles=1, test=2),
               llm=LocalLLM(tiny_lm, name="local:tiny"), progress=False)
    con = sqlite3.connect(store_path(run))
    (fid, expl), = con.execute("SELECT feature, explanation FROM interp ORDER BY detection DESC, feature LIMIT 1")
    _, f = get_json(server, f"/api/feature?run=set/layer_02&id={fid}")
    assert f["explanations"][0]["explanation"] == expl and f["explanations"][0]["llm"] == "local:tiny"
    assert f["label"] == "" and f["auto_label"] == expl
    _, s = get_json(server, f"/api/search?{urllib.parse.urlencode({'run': 'set/layer_02', 'q': expl[:6]})}")
    assert any(x["id"] == fid and any(w.startswith("explained: ") for w in x["why"]) for x in s["results"])
    _, r = get_json(server, "/api/run?run=set/layer_02")
    assert r["interp"]["llm"]["local:tiny"]["features"] == 2 and {e["id"] for e in r["explained"]} >= {fid}


def test_concepts_from_the_viewer(server, tiny_texts):
    status, r = get_json(server, "/api/concepts", {"run": "set/layer_01", "positive": "\n".join(tiny_texts[:4]),
                                                     "negative": tiny_texts[4:9]})
    assert status == 200 and (r["positive"], r["negative"]) == (4, 5)
    assert len(r["features"]) == 20 and all(0 <= c["auroc"] <= 1 for c in r["features"])
    assert [c["auroc"] for c in r["features"]] == sorted((c["auroc"] for c in r["features"]), reverse=True)
    status, r = get_json(server, "/api/concepts", {"run": "set/layer_01", "positive": "a b", "negative": "  \n "})
    assert status == 400 and "negative" in r["error"]


def test_a_cross_layer_transcoder_is_traced_from_the_viewer(tmp_path, tiny_model_dir, tiny_corpus):
    """A CLT is a set to the viewer: offered for tracing, traced, and its graph's feature nodes point at its runs."""
    from transcoders.training import TrainConfig, train

    train(TrainConfig(model=tiny_model_dir, corpus=tiny_corpus, layers="all", kind="clt", out=str(tmp_path / "clt"),
                      width=32, k=4, tokens=2048, batch_size=256, ctx_len=32, chunk_tokens=2048, forward_batch=16),
          progress=False)
    srv = make_server(tmp_path, port=0)
    serve_in_thread(srv)
    try:
        _, d = get_json(srv, "/api/runs")
        assert d["sets"] == ["clt"]
        for mode in ("graph", "paths"):
            status, r = get_json(srv, "/api/graph/compute", {"set": "clt", "prompt": "the king sees a dog", "mode": mode,
                                                             "target": "logit:#5"})
            assert status == 200, r
            status, g = get_json(srv, f"/api/graph?path={r['path']}")
            assert status == 200 and g["metadata"]["info"]["mode"] == mode
            assert mode == "paths" or g["metadata"]["info"]["replacement_score"] > 0
        feats = [n for n in g["nodes"] if n["feature_type"] == "cross layer transcoder"]  # (the paths' nodes)
        assert feats and all(n["run"] == f"clt/layer_{int(n['layer']):02d}" for n in feats)
    finally:
        srv.shutdown()
        srv.server_close()
