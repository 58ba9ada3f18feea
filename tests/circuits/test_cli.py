"""`transcoders circuit` end to end on a tiny model saved with a tokenizer, and its one-line errors."""

from __future__ import annotations

import json

import pytest
from circuit_helpers import random_clt, random_set

from transcoders.cli import main
from transcoders.dictionary import save_dictionary
from transcoders.models import load_model


@pytest.fixture(scope="module")
def set_dir(tmp_path_factory, tiny_model_dir):
    lm = load_model(tiny_model_dir)
    tset = random_set(lm, width=48, k=6)
    out = tmp_path_factory.mktemp("set")
    for L, tc in tset.transcoders.items():
        tc.cfg.model = tiny_model_dir
        save_dictionary(tc, out / f"layer_{L:02d}")
    return out


@pytest.fixture(scope="module")
def clt_dir(tmp_path_factory, tiny_model_dir):
    lm = load_model(tiny_model_dir)
    out = tmp_path_factory.mktemp("clt")
    for L, tc in random_clt(lm).transcoders.items():
        tc.cfg.model = tiny_model_dir
        save_dictionary(tc, out / f"layer_{L:02d}")
    return out


def test_every_circuit_command_takes_a_cross_layer_transcoder(clt_dir, tmp_path, capsys):
    prompt = ["--prompt", "the king sees a ship"]
    assert main(["circuit", "--set", str(clt_dir), *prompt, "--mode", "graph", "--target", "logit:#5", "--quiet",
                 "--out", str(tmp_path / "g.json")]) == 0
    assert "replacement score" in capsys.readouterr().out
    doc = json.loads((tmp_path / "g.json").read_text())
    assert [n for n in doc["nodes"] if n["feature_type"] == "cross layer transcoder"]
    assert main(["circuit", "--set", str(clt_dir), *prompt, "--depth", "2", "--branches", "4", "--quiet"]) == 0
    assert "strongest paths" in capsys.readouterr().out
    assert main(["connections", "--set", str(clt_dir), "--feature", "2:3", "--top", "3"]) == 0
    assert "pullback onto layer 1" in capsys.readouterr().out
    assert main(["intervene", "--set", str(clt_dir), *prompt, "--zero", "0:*", "--target", "logit:#5"]) == 0
    assert "edited" in capsys.readouterr().out
    # part of a CLT is no replacement of its MLPs: refused in one line
    assert main(["circuit", "--set", str(clt_dir / "layer_01"), *prompt]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "whole cross-layer transcoder" in err and "\n" not in err


def test_circuit_paths_and_graph(set_dir, tmp_path, capsys):
    out = tmp_path / "g.json"
    assert main(["circuit", "--set", str(set_dir), "--prompt", "the king sees a ship", "--depth", "2",
                 "--branches", "4", "--target", "logit:#5-#7", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "strongest paths" in text and "wrote" in text
    assert "next-token probabilities at position 8: '" in text  # the target's tokens, how likely the model finds them
    doc = json.loads(out.read_text())
    assert doc["metadata"]["info"]["mode"] == "paths" and doc["nodes"] and doc["links"]
    assert main(["circuit", "--set", str(set_dir), "--prompt", "the king sees a ship", "--mode", "graph",
                 "--target", "2:5@-1", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "replacement score" in text
    written = list((set_dir / "graphs").glob("*-graph-*.json"))
    assert len(written) == 1 and json.loads(written[0].read_text())["metadata"]["info"]["targets"][0].startswith("tc2[5]")
    # another target on the same prompt is another file; the same command again rewrites its own
    for target in ("2:6@-1", "2:5@-1"):
        assert main(["circuit", "--set", str(set_dir), "--prompt", "the king sees a ship", "--mode", "graph",
                     "--target", target, "--quiet"]) == 0
    assert len(list((set_dir / "graphs").glob("*-graph-*.json"))) == 2


@pytest.mark.parametrize("args, message", [
    (["--target", "7:1"], "no layer 7"),
    (["--target", "0:9999"], "does not exist"),
    (["--target", "logit:zzzzzzzzzzzz"], "not one"),
    (["--target", "logit:#5-"], "the token after it is missing"),
    (["--target", "what"], "cannot read target"),
    (["--prompt", "  "], "--prompt is empty"),
])  # fmt: skip
def test_circuit_bad_input_is_one_line(set_dir, capsys, args, message):
    base = {"--prompt": "the king sees a ship"}
    argv = ["circuit", "--set", str(set_dir), "--quiet"]
    extra = dict(zip(args[::2], args[1::2]))
    for k, v in {**base, **extra}.items():
        argv += [k, v]
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err


def test_circuit_refuses_a_missing_set_or_an_sae(tmp_path, set_dir, capsys):
    assert main(["circuit", "--set", str(tmp_path / "nope"), "--prompt", "x"]) != 0
    assert "does not exist" in capsys.readouterr().err
    cfg = json.loads((set_dir / "layer_00" / "config.json").read_text())
    bad = tmp_path / "sae"
    (bad / "layer_00").mkdir(parents=True)
    (bad / "layer_00" / "config.json").write_text(json.dumps({**cfg, "kind": "sae"}))
    (bad / "layer_00" / "weights.safetensors").write_bytes((set_dir / "layer_00" / "weights.safetensors").read_bytes())
    assert main(["circuit", "--set", str(bad), "--prompt", "x"]) != 0
    assert "not a transcoder" in capsys.readouterr().err


def test_connections_and_intervene(set_dir, capsys):
    assert main(["connections", "--set", str(set_dir), "--feature", "2:3", "--head", "1.0", "--top", "3"]) == 0
    text = capsys.readouterr().out
    assert "de-embedding" in text and "through head 1.0" in text and "pullback onto layer 1" in text
    assert main(["connections", "--set", str(set_dir), "--layers", "0,2", "--top", "4"]) == 0
    assert capsys.readouterr().out.count("-> tc2[") == 4
    assert main(["intervene", "--set", str(set_dir), "--prompt", "the king sees a ship", "--zero", "1:*",
                 "--target", "logit:#5", "--random", "2"]) == 0
    text = capsys.readouterr().out
    assert "clean" in text and "edited" in text and "baseline" in text
    for argv, message in ((["--zero", "9:1"], "no layer 9"), (["--clamp", "1:1"], "clamp"), ([], "nothing to do")):
        assert main(["intervene", "--set", str(set_dir), "--prompt", "the king", *argv]) != 0
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and message in err and "\n" not in err
    assert main(["connections", "--set", str(set_dir), "--layers", "2,0"]) != 0
    assert "upwards" in capsys.readouterr().err


def test_ablate_circuit_from_graph_json(set_dir, tmp_path, capsys):
    out = tmp_path / "p.json"
    assert main(["circuit", "--set", str(set_dir), "--prompt", "the king sees a ship", "--target", "logit:#5",
                 "--depth", "2", "--branches", "5", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["intervene", "--set", str(set_dir), "--prompt", "the king sees a ship", "--target", "logit:#5",
                 "--ablate-circuit", str(out), "--circuit-top", "3"]) == 0
    assert "edit(s); target" in capsys.readouterr().out
    import json

    from transcoders.circuits.api import circuit_edits

    values = {(int(n["layer"]), int(n["node_id"].split("_")[1]), int(n["ctx_idx"])): n["influence"]
              for n in json.loads(out.read_text())["nodes"] if n["feature_type"] == "cross layer transcoder"}
    for sign in ("positive", "negative", "both"):
        edits = circuit_edits(str(out), 0, "", sign)
        got = [values[(e.layer, e.feature, e.pos)] for e in edits]
        assert len(got) == sum(1 for v in values.values() if sign == "both" or (v > 0) == (sign == "positive") and v)
        assert [abs(v) for v in got] == sorted((abs(v) for v in got), reverse=True)
        assert sign == "both" or all((v > 0) == (sign == "positive") for v in got)
    assert main(["intervene", "--set", str(set_dir), "--prompt", "x", "--ablate-circuit", str(tmp_path / "none.json")]) != 0
    assert "does not exist" in capsys.readouterr().err
