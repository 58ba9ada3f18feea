"""Path search, merged path graphs, attribution graphs and their JSON, on tiny random models."""

from __future__ import annotations

import json

import pytest
import torch
from circuit_helpers import replacement_for

from transcoders.circuits.graph import attribution_graph, influence, prune, scores
from transcoders.circuits.graph_json import (
    attribution_graph_json,
    feature_nodes,
    graph_mode,
    merged_graph_json,
    read_json,
    write_json,
)
from transcoders.circuits.paths import Component, find_paths, merge_paths, path_value_check
from transcoders.circuits.targets import feature_target, logit_target, parse_target, token_probabilities
from transcoders.errors import CircuitError


@pytest.fixture(scope="module", params=["llama", "gpt_neox-parallel", "gemma2", "llama+clt", "gemma2+clt"])
def fp(request):
    rep = replacement_for(request.param)
    return rep.trace([torch.randint(3, 120, (10,), generator=torch.Generator().manual_seed(5))])[0]


def last_feature(fp):
    t = fp.layers[fp.rep.n_layers - 1]
    return feature_target(fp, fp.rep.n_layers - 1, int(t.acts_idx[-1]), int(t.acts_pos[-1]))


def test_every_path_node_reads_its_attribution_from_the_residual_stream(fp):
    search = find_paths(fp, last_feature(fp), depth=3, branches=6)
    assert len(search.paths) > 6
    for path in search.paths:
        vals = torch.tensor([n.value for n in path if not n.leaf])
        assert torch.allclose(path_value_check(fp, path), vals, atol=1e-4 * max(1.0, float(vals.abs().max())))


def test_first_step_takes_the_largest_contributions_by_magnitude_with_sign(fp):
    target = last_feature(fp)
    search = find_paths(fp, target, depth=1, branches=5)
    con = fp.contributions(target.vector, target.stage, target.pos, target.const)
    every = [float(c) for _, cs in con.features.values() for c in cs]
    every += [float(x) for g in con.attn.values() for x in g.flatten()] + list(con.skip.values()) + [con.embed]
    expected = sorted(every, key=abs, reverse=True)[:5]
    got = [p[-1].value for p in search.paths]
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-9)
    # a random model has inhibitory contributions among the strongest: they must not be dropped
    assert any(v < 0 for v in every) and (any(v < 0 for v in got) or all(abs(v) < abs(min(every)) for v in got))


def test_merged_graph_nodes_add_up(fp):
    target = last_feature(fp)
    merged = merge_paths(find_paths(fp, target, depth=3, branches=8))
    root = Component("target")
    assert merged.nodes[root] == pytest.approx(float(fp.pre_acts(target.layer)[target.pos, target.feature]), rel=1e-4)
    incoming: dict[Component, float] = {}
    for (_, parent), w in merged.edges.items():
        incoming[parent] = incoming.get(parent, 0.0) + w
    for parent, total in incoming.items():
        assert total == pytest.approx(merged.nodes[parent], rel=1e-4, abs=1e-4)
    # error and bias children are the real error and bias terms of the root
    con = fp.contributions(target.vector, target.stage, target.pos, target.const)
    assert merged.edges[(Component("bias", -1, -1, target.pos), root)] == pytest.approx(con.bias, rel=1e-5)
    doc = merged_graph_json(fp, merged, "t")
    ids = [n["node_id"] for n in doc["nodes"]]
    assert len(ids) == len(set(ids))
    assert {x["source"] for x in doc["links"]} | {x["target"] for x in doc["links"]} <= set(ids)


def test_attribution_graph_rows_are_exact(fp):
    g = attribution_graph(fp, batch_size=7)
    assert g.n_features == g.n_active
    real = torch.stack([fp.pre_acts(int(L))[int(p), int(f)] for L, p, f in g.features])
    rows = g.adjacency.sum(1) + g.bias
    assert torch.allclose(rows[: g.n_features], real, atol=1e-4 * float(real.abs().max()))
    lg = fp.logits()
    logits = torch.stack([lg[t.tokens[0]] - lg.mean() for t in g.outputs])  # demeaned, as circuit-tracer attributes
    assert torch.allclose(rows[g.output_slice], logits, atol=1e-4 * max(1.0, float(logits.abs().max())))
    raw = attribution_graph(fp, batch_size=7, max_feature_nodes=4, demean=False)  # and as they are
    assert torch.allclose(raw.values[raw.output_slice], torch.stack([lg[t.tokens[0]] for t in raw.outputs]),
                          atol=1e-4 * max(1.0, float(lg.abs().max())))
    # no edge runs upwards: a feature only receives from features in lower layers
    L = g.features[:, 0]
    fa = g.adjacency[: g.n_features, : g.n_features]
    assert not (fa != 0)[L[:, None] <= L[None, :]].any()
    assert g.output_weights.sum() >= 0.95 or len(g.outputs) == 10


def test_feature_selection_by_influence_and_pruning(fp):
    full = attribution_graph(fp)
    capped = attribution_graph(fp, max_feature_nodes=12, batch_size=4)
    assert capped.n_features == 12
    # the capped graph's rows are the full graph's rows for the same features (columns of dropped features aside)
    for k, key in enumerate(capped.features.tolist()):
        j = full.features.tolist().index(key)
        assert capped.values[k] == pytest.approx(float(full.values[j]), rel=1e-5, abs=1e-6)
    # the first rows chosen are among the most influential features of the full graph
    inf = influence(full.adjacency, full.output_weight_vector())[: full.n_features]
    top = {tuple(full.features[j].tolist()) for j in inf.topk(24).indices}
    assert len(top & {tuple(x) for x in capped.features.tolist()}) >= 6
    node_mask, edge_mask, cum, *_ = prune(full, 0.8, 0.98)
    assert node_mask[full.token_slice].all() and node_mask[full.output_slice].all()
    assert not edge_mask[~node_mask].any() and not edge_mask[:, ~node_mask].any()
    assert node_mask.sum() < node_mask.numel()
    r, c = scores(full)
    assert 0 <= r <= 1 and 0 <= c <= 1


def test_graph_json_follows_the_circuit_tracer_schema(fp):
    g = attribution_graph(fp)
    doc = json.loads(json.dumps(attribution_graph_json(g, "slug", prune(g), scores(g))))
    for key in ("slug", "scan", "prompt_tokens", "prompt"):
        assert key in doc["metadata"]
    assert set(doc["qParams"]) == {"pinnedIds", "supernodes", "linkType", "clickedId", "sg_pos"}
    ids = {n["node_id"] for n in doc["nodes"]}
    assert len(ids) == len(doc["nodes"])
    for n in doc["nodes"]:
        for key in ("node_id", "feature", "layer", "ctx_idx", "feature_type", "jsNodeId", "clerp"):
            assert key in n
        assert isinstance(n["layer"], str)
    for x in doc["links"]:
        assert x["source"] in ids and x["target"] in ids and isinstance(x["weight"], float)
    types = {n["feature_type"] for n in doc["nodes"]}
    assert {"embedding", "logit"} <= types
    assert sum(n["is_target_logit"] for n in doc["nodes"]) == 1
    # a token's logit node carries the model's probability of that token next (not its weight in the graph)
    probs = fp.rep.adapter.probabilities(fp.logits(-1).double())  # softcapped where the model caps
    logits = [n for n in doc["nodes"] if n["feature_type"] == "logit"]
    for n in logits:
        assert n["token_prob"] == pytest.approx(float(probs[n["feature"]]), rel=1e-4, abs=1e-7)
    paths = merged_graph_json(fp, merge_paths(find_paths(fp, logit_target(fp, int(probs.argmin())), depth=1)), "s")
    (out,) = [n for n in paths["nodes"] if n["feature_type"] == "logit"]
    assert out["token_prob"] == pytest.approx(float(probs.min()), rel=1e-4, abs=1e-9) and out["token_prob"] < 0.5


def test_graph_json_reads_back_what_it_wrote(fp, tmp_path):
    """The reader gives each kept feature's (layer, index, position), influence and activation, as the graph has
    them; anything that is not a graph file is a one-line error."""
    g = attribution_graph(fp)
    pruned = prune(g, 1.0, 1.0)
    path = write_json(attribution_graph_json(g, "slug", pruned, scores(g)), tmp_path / "g.json")
    doc = read_json(path)
    feats = feature_nodes(doc)
    kept = pruned.node_mask[: g.n_features].nonzero(as_tuple=True)[0].tolist()
    by_key = {tuple(g.features[i].tolist()): i for i in kept}  # (layer, pos, feature) -> row
    assert feats and {(f.layer, f.pos, f.feature) for f in feats} <= set(by_key)
    for f in feats:
        i = by_key[(f.layer, f.pos, f.feature)]
        assert f.activation == pytest.approx(float(g.activations[i]))
        assert f.influence == pytest.approx(float(pruned.cumulative[i]))
    assert graph_mode(doc) == "graph"
    (tmp_path / "bad.json").write_text('{"nodes": 3}')
    for bad in (tmp_path / "bad.json", tmp_path / "none.json"):
        with pytest.raises(CircuitError):
            read_json(bad)


def test_targets(fp):
    t = parse_target(fp, f"{fp.rep.n_layers - 1}:3@-1")
    assert (t.layer, t.feature, t.pos) == (fp.rep.n_layers - 1, 3, fp.n_tokens - 1)
    d = logit_target(fp, 5, 7)
    assert d.value(fp) == pytest.approx(float(fp.logits()[5] - fp.logits()[7]), rel=1e-4, abs=1e-5)
    assert parse_target(fp, "logit:#5-#7").value(fp) == pytest.approx(d.value(fp))
    groups = parse_target(fp, "logit:#5,#6,#9-#7,#8")
    lg = fp.logits()
    assert groups.value(fp) == pytest.approx(float(lg[[5, 6, 9]].mean() - lg[[7, 8]].mean()), rel=1e-4, abs=1e-5)
    # a single logit or group (not a difference) is demeaned unless told otherwise; differences are the same both ways
    mean = float(lg.mean())
    assert parse_target(fp, "logit:#5,#6").value(fp) == pytest.approx(float(lg[[5, 6]].mean()) - mean, rel=1e-4, abs=1e-5)
    assert parse_target(fp, "logit:#5,#6", demean=False).value(fp) == pytest.approx(float(lg[[5, 6]].mean()), rel=1e-4,
                                                                                      abs=1e-5)
    one = parse_target(fp, "logit:#5")
    assert one.demeaned and one.label.endswith("-mean") and not d.demeaned
    assert one.value(fp) == pytest.approx(float(lg[5]) - mean, rel=1e-4, abs=1e-5)
    assert parse_target(fp, "logit:#5-#7", demean=False).value(fp) == pytest.approx(d.value(fp))
    for bad in ("99:1", "0:100000", "logit:#99999", "nonsense", "0:1@50", "logit:#5,#6-#6"):
        with pytest.raises(CircuitError):
            parse_target(fp, bad)
    with pytest.raises(CircuitError, match=r"ends with '-': the token after it is missing \(e\.g\. logit:#5-2\)"):
        parse_target(fp, "logit:#5-")


def test_a_logit_target_says_how_likely_its_tokens_are(fp):
    probs = fp.rep.adapter.probabilities(fp.logits())
    order = probs.argsort(descending=True)
    top, rare = int(order[0]), int(order[-1])
    line = token_probabilities(fp, parse_target(fp, f"logit:#{top}-#{rare}"))
    assert f"p={float(probs[top]):.3g} (rank 1)" in line and f"(rank {len(probs):,})" in line
    assert "hardly predicts" not in line  # the top token is likely enough (a 200-token vocabulary)
    line = token_probabilities(fp, parse_target(fp, f"logit:#{rare}"))
    assert f"p={float(probs[rare]):.3g}" in line and "hardly predicts these here" in line
    assert token_probabilities(fp, parse_target(fp, "0:1@-1")) == ""
