"""Export to SAELens / circuit-tracer and back: the files follow each format's documented shapes and
semantics (checked by re-implementing the format's forward from the raw tensors), and a round trip
reproduces outputs exactly."""

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file
from tiny_dictionaries import D, F, make

from transcoders.cli import main
from transcoders.dictionary import load_dictionary, save_dictionary
from transcoders.dictionary.interop import export_runs, import_runs
from transcoders.errors import CheckpointError


def _topk(pre, k):
    v, i = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, i, torch.relu(v))


def _decode(z, t, x):
    y = z @ t["W_dec"] + t["b_dec"]
    return y + x @ t["W_skip"].T if "W_skip" in t else y


def reference_forward(fmt, t, cfg, x):
    """Each format's forward, written from its documentation, on the exported tensors only."""
    if fmt == "saelens":
        pre = x @ t["W_enc"] + t["b_enc"]
        arch = cfg["architecture"]
        if arch == "topk":
            z = _topk(pre, cfg["k"])
        elif arch.startswith("jumprelu"):
            z = torch.relu(pre) * (pre > t["threshold"])
        else:
            z = torch.relu(pre)
        return z, _decode(z, t, x)
    pre = x @ t["W_enc"].T + t["b_enc"]
    if "activation_function.threshold" in t:
        z = pre * (pre > t["activation_function.threshold"])
    else:
        z = torch.relu(pre)
    return z, _decode(z, t, x)


CASES = {
    "saelens": [("sae", "relu"), ("sae", "topk"), ("sae", "jumprelu"), ("sae", "batchtopk"), ("transcoder", "relu"),
                ("transcoder", "jumprelu"), ("transcoder", "batchtopk"), ("skip-transcoder", "relu"),
                ("skip-transcoder", "jumprelu")],
    "circuit-tracer": [("transcoder", "relu"), ("transcoder", "jumprelu"), ("transcoder", "batchtopk"),
                       ("skip-transcoder", "relu"), ("skip-transcoder", "jumprelu")],
}


@pytest.mark.parametrize("fmt,kind,activation", [(f, k, a) for f, cases in CASES.items() for k, a in cases])
def test_export_follows_the_format_and_round_trips_exactly(tmp_path, fmt, kind, activation):
    layer = 3 if fmt == "saelens" else 0  # circuit-tracer's sets start at layer 0
    d = make(kind, activation, layer=layer)
    save_dictionary(d, tmp_path / "run")
    (out,) = export_runs([tmp_path / "run"], fmt, tmp_path / "exported")
    x = torch.randn(64, D)
    if fmt == "saelens":
        cfg = json.loads((out / "cfg.json").read_text())
        t = load_file(str(out / "sae_weights.safetensors"))
        assert t["W_enc"].shape == (D, F) and t["W_dec"].shape == (F, D) and t["b_enc"].shape == (F,)
        assert cfg["d_sae"] == F and cfg["apply_b_dec_to_input"] is False
        assert cfg["metadata"]["model_name"] == "tiny-model" and cfg["metadata"]["sae_lens_version"] >= "6"
        site = "hook_mlp_out" if kind == "sae" else "ln2.hook_normalized"
        assert cfg["metadata"]["hook_name"] == f"blocks.3.{site}"
        if kind != "sae":
            assert cfg["metadata"]["hook_name_out"] == "blocks.3.hook_mlp_out" and cfg["d_out"] == D
    else:
        cfg = yaml.safe_load((out / "config.yaml").read_text())
        t = load_file(str(out / "layer_0.safetensors"))
        assert cfg["model_kind"] == "transcoder_set" and cfg["feature_input_hook"] == "mlp.hook_in" and cfg["scan"]
        assert t["W_enc"].shape == (F, D) and t["W_dec"].shape == (F, D) and t["b_dec"].shape == (D,)
        if kind == "skip-transcoder":
            assert t["W_skip"].shape == (D, D)
        if activation in ("jumprelu", "batchtopk"):
            assert t["activation_function.threshold"].shape == (F,)
    z_ref, y_ref = reference_forward(fmt, t, cfg, x)
    with torch.no_grad():
        torch.testing.assert_close(d.encode(x), z_ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(d(x), y_ref, rtol=1e-5, atol=1e-5)
    # and back: bit-identical outputs
    (back,) = import_runs(out, tmp_path / "back")
    e = load_dictionary(back)
    assert e.cfg.layer == layer and e.cfg.model == "tiny-model" and e.cfg.kind == kind
    assert (e.cfg.hook_in, e.cfg.hook_out) == (d.cfg.hook_in, d.cfg.hook_out)
    with torch.no_grad():
        assert torch.equal(e(x), d(x))
        assert torch.equal(e.encode(x), d.encode(x))


def test_a_set_exports_to_one_circuit_tracer_folder_and_comes_back_as_a_set(tmp_path):
    for layer in range(3):
        save_dictionary(make("transcoder", "relu", layer=layer, seed=layer), tmp_path / "set" / f"layer_{layer:02d}")
    assert main(["export", str(tmp_path / "set"), "--to", "circuit-tracer", str(tmp_path / "ct")]) == 0
    cfg = yaml.safe_load((tmp_path / "ct" / "config.yaml").read_text())
    assert [p.split("/")[-1] for p in cfg["transcoders"]] == ["layer_0.safetensors", "layer_1.safetensors", "layer_2.safetensors"]
    assert main(["import", str(tmp_path / "ct"), str(tmp_path / "back")]) == 0
    assert sorted(p.name for p in (tmp_path / "back").iterdir()) == ["layer_00", "layer_01", "layer_02"]
    x = torch.randn(8, D)
    for layer in range(3):
        a, b = load_dictionary(tmp_path / "set" / f"layer_{layer:02d}"), load_dictionary(tmp_path / "back" / f"layer_{layer:02d}")
        assert torch.equal(a(x), b(x))


def test_unsupported_exports_and_bad_imports_are_one_line_errors(tmp_path, capsys):
    save_dictionary(make("transcoder", "topk"), tmp_path / "topk")
    assert main(["export", str(tmp_path / "topk"), "--to", "saelens", str(tmp_path / "x")]) == 2
    assert "no TopK transcoder" in capsys.readouterr().err
    # circuit-tracer 0.5.0 would build a ReLU from a TopK transcoder's tensors: refused, never a silent change
    save_dictionary(make("transcoder", "topk", layer=0), tmp_path / "topk0")
    assert main(["export", str(tmp_path / "topk0"), "--to", "circuit-tracer", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "no TopK" in err and "batchtopk" in err and not (tmp_path / "x").exists()
    # its sets start at layer 0 and have no gaps
    save_dictionary(make("transcoder", "relu", layer=3), tmp_path / "l3")
    assert main(["export", str(tmp_path / "l3"), "--to", "circuit-tracer", str(tmp_path / "x")]) == 2
    assert "every layer from 0" in capsys.readouterr().err
    save_dictionary(make("sae", "relu"), tmp_path / "sae")
    assert main(["export", str(tmp_path / "sae"), "--to", "circuit-tracer", str(tmp_path / "y")]) == 2
    assert "not SAEs" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["import", str(tmp_path / "empty"), str(tmp_path / "z")]) == 2
    assert "is not a SAELens folder" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="not an MLP"):
        (tmp_path / "resid").mkdir()
        export_runs([tmp_path / "sae"], "saelens", tmp_path / "resid")
        cfg = json.loads((tmp_path / "resid" / "cfg.json").read_text())
        cfg["metadata"]["hook_name"] = "blocks.3.hook_resid_pre"
        (tmp_path / "resid" / "cfg.json").write_text(json.dumps(cfg))
        import_runs(tmp_path / "resid", tmp_path / "r2")


def test_import_refuses_an_existing_folder_and_a_failed_overwrite_loses_nothing(tmp_path, capsys):
    save_dictionary(make("transcoder", "relu", layer=0), tmp_path / "run")
    export_runs([tmp_path / "run"], "circuit-tracer", tmp_path / "ct")
    assert main(["import", str(tmp_path / "ct"), str(tmp_path / "dest")]) == 0
    before = (tmp_path / "dest" / "weights.safetensors").read_bytes()
    assert main(["import", str(tmp_path / "ct"), str(tmp_path / "dest")]) == 2
    assert "already exists" in capsys.readouterr().err
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "layer_0.safetensors").write_bytes(b"junk")
    assert main(["import", str(tmp_path / "broken"), str(tmp_path / "dest"), "--overwrite"]) == 2
    assert "corrupt" in capsys.readouterr().err
    assert (tmp_path / "dest" / "weights.safetensors").read_bytes() == before
    assert main(["import", str(tmp_path / "ct"), str(tmp_path / "dest"), "--overwrite"]) == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left behind


@pytest.mark.parametrize("transcode,skip", [(True, False), (True, True), (False, False)])
def test_sparsify_folders_import_with_sparsifys_own_maths(tmp_path, transcode, skip):
    """A folder laid out as sparsify 1.3 saves one (hookpoint/cfg.json + sae.safetensors with encoder.weight,
    encoder.bias, W_dec, b_dec, W_skip); its forward, written out from sparsify's code: encode = topk(relu(
    linear(x [- b_dec for SAEs]))), decode = embedding_bag(idx, W_dec, acts) + b_dec (+ x W_skip^T)."""
    import json

    import torch.nn.functional as F
    from safetensors.torch import save_file

    from transcoders.dictionary.interop import detect_format, import_runs

    g = torch.Generator().manual_seed(0)
    d, W, k = 16, 40, 5
    t = {"encoder.weight": torch.randn(W, d, generator=g), "encoder.bias": torch.randn(W, generator=g) * 0.1,
         "W_dec": torch.randn(W, d, generator=g), "b_dec": torch.randn(d, generator=g)}
    if skip:
        t["W_skip"] = torch.randn(d, d, generator=g) * 0.1
    hp = tmp_path / "run" / "layers.3.mlp"
    hp.mkdir(parents=True)
    save_file(t, str(hp / "sae.safetensors"))
    (hp / "cfg.json").write_text(json.dumps({"activation": "topk", "expansion_factor": 8, "normalize_decoder": True,
                                             "num_latents": W, "k": k, "multi_topk": False, "skip_connection": skip,
                                             "transcode": transcode, "d_in": d}))
    assert detect_format(tmp_path / "run") == "sparsify"
    (run,) = import_runs(tmp_path / "run", tmp_path / "ours", model="default")
    ours = load_dictionary(run)
    assert ours.cfg.layer == 3 and ours.cfg.k == k
    assert ours.cfg.hook_in == ("blocks.3.mlp.in" if transcode else "blocks.3.mlp.out")
    assert ours.cfg.kind == ("skip-transcoder" if skip else "transcoder") if transcode else ours.cfg.kind == "sae"
    x = torch.randn(64, d, generator=g)
    xin = x if transcode else x - t["b_dec"]
    pre = F.relu(F.linear(xin, t["encoder.weight"], t["encoder.bias"]))
    vals, idx = pre.topk(k, dim=-1)
    y = F.embedding_bag(idx, t["W_dec"], per_sample_weights=vals, mode="sum") + t["b_dec"]
    if skip:
        y = y + x @ t["W_skip"].T
    z = torch.zeros(64, W).scatter_(1, idx, vals)
    with torch.no_grad():
        assert torch.allclose(ours.encode(x), z, atol=1e-5)
        assert torch.allclose(ours.decode(ours.encode(x), x), y, atol=1e-4)
