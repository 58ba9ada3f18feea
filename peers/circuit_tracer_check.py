"""Runs inside the circuit-tracer environment (peers/envs.py): our exports and model folders in circuit-tracer's
(and its pinned transformers') own hands.

    python circuit_tracer_check.py REQUEST.json REPLY.json

REQUEST keys (each optional):
- "model": {"folder", "texts": [...], "ids": [[...]], "out"}: load a model folder with transformers as pinned here;
  the tokenizer's ids for each text, its special ids, and the logits for "ids" (to "out": "{i}.logits");
- "load": {"set", "inputs", "out"}: ``load_transcoders(config.yaml as a dict)``; per layer, the activation function
  circuit-tracer built and its codes and outputs for "inputs" (tensor "x"; to "out": "{layer}.codes"/"{layer}.out");
- "load_clt": {"set", "inputs", "out"}: a cross-layer transcoder folder loaded the way ``ReplacementModel.from_pretrained``
  loads a local one (``load_transcoder_from_hub``, which reads a folder with ``config.yaml`` as a cached set); its
  activation function, and its codes and reconstruction for "inputs" (tensor "x" [n_layers, n_pos, d_model]);
- "attribute": {"model", "set", "ids", "out", "json_dir", "slug", "max_feature_nodes", "batch_size", "node_threshold",
  "edge_threshold"}:
  ``ReplacementModel.from_pretrained(model, set, backend="nnsight")`` and ``attribute`` on the token ids; writes the
  graph's tensors to "out", its pruning and scores to the reply, and circuit-tracer's graph JSON into "json_dir".
Every warning raised while loading is reported.
"""

import json
import sys
import warnings
from importlib.metadata import version

import torch
import yaml
from peak import Peak
from safetensors.torch import load_file, save_file

request = json.load(open(sys.argv[1]))
reply: dict = {"versions": {p: version(p) for p in ("circuit-tracer", "transformers", "nnsight", "torch")}}


def caught(fn):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        result = fn()
    return result, [f"{type(m.message).__name__}: {m.message}" for m in w]


if "model" in request:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    job = request["model"]
    tok, w1 = caught(lambda: AutoTokenizer.from_pretrained(job["folder"]))
    model, w2 = caught(lambda: AutoModelForCausalLM.from_pretrained(job["folder"], dtype=torch.float32))
    with torch.no_grad():
        logits = {f"{i}.logits": model(input_ids=torch.tensor([ids])).logits[0].contiguous()
                  for i, ids in enumerate(job["ids"])}
    save_file(logits, job["out"])
    reply["model"] = {"tokenizer": type(tok).__name__, "ids": [tok(t, add_special_tokens=False).input_ids for t in job["texts"]],
                      "bos": tok.bos_token_id, "eos": tok.eos_token_id, "special": sorted(tok.all_special_ids),
                      "rope_theta": getattr(model.config, "rope_theta", None), "warnings": w1 + w2}

if "load" in request:
    from circuit_tracer.utils.hf_utils import load_transcoders

    job = request["load"]
    config = yaml.safe_load(open(f"{job['set']}/config.yaml"))
    tset, warned = caught(lambda: load_transcoders(config, device=torch.device("cpu"), lazy_decoder=False))
    x = load_file(job["inputs"])["x"]
    out, layers = {}, {}
    with torch.no_grad():
        for layer, tc in enumerate(tset.transcoders):
            z = tc.encode(x)
            out[f"{layer}.codes"] = z.contiguous()
            out[f"{layer}.out"] = tc.decode(z, x).contiguous()
            act = tc.activation_function  # a module (JumpReLU, TopK) or a function (torch's relu)
            layers[str(layer)] = getattr(act, "__name__", type(act).__name__)
    save_file(out, job["out"])
    reply["load"] = {"class": type(tset).__name__, "activations": layers, "d_transcoder": tset.d_transcoder,
                     "input_hook": tset.feature_input_hook, "output_hook": tset.feature_output_hook,
                     "scan": tset.scan, "warnings": warned}

if "load_clt" in request:
    from circuit_tracer.utils.hf_utils import load_transcoder_from_hub

    job = request["load_clt"]
    (clt, config), warned = caught(lambda: load_transcoder_from_hub(job["set"], device=torch.device("cpu"),
                                                                    dtype=torch.float32, lazy_decoder=False))
    x = load_file(job["inputs"])["x"]  # [n_layers, n_pos, d_model]: each layer's MLP input
    with torch.no_grad():
        z = clt.encode(x)
        save_file({"codes": z.contiguous(), "out": clt.decode(z).contiguous()}, job["out"])
    act = clt.activation_function
    reply["load_clt"] = {"class": type(clt).__name__, "activation": getattr(act, "__name__", type(act).__name__),
                         "n_layers": clt.n_layers, "d_transcoder": clt.d_transcoder, "model_kind": config["model_kind"],
                         "input_hook": clt.feature_input_hook, "output_hook": clt.feature_output_hook,
                         "scan": clt.scan, "warnings": warned}

if "attribute" in request:
    from circuit_tracer import ReplacementModel, attribute
    from circuit_tracer.graph import compute_graph_scores, prune_graph
    from circuit_tracer.utils.create_graph_files import create_graph_files

    job = request["attribute"]
    model, warned = caught(lambda: ReplacementModel.from_pretrained(job["model"], job["set"], backend="nnsight",
                                                                    device=torch.device("cpu"), dtype=torch.float32))
    with Peak() as measured:
        graph = attribute(torch.tensor(job["ids"]), model, max_n_logits=job.get("max_n_logits", 10),
                          desired_logit_prob=job.get("desired_logit_prob", 0.95), batch_size=job.get("batch_size", 512),
                          max_feature_nodes=job.get("max_feature_nodes"))
    node_mask, edge_mask, cumulative = prune_graph(graph, 0.8, 0.98)
    replacement, completeness = compute_graph_scores(graph)
    save_file({"active_features": graph.active_features.contiguous(), "selected_features": graph.selected_features,
               "adjacency": graph.adjacency_matrix.contiguous(), "activations": graph.activation_values.contiguous(),
               "logit_ids": torch.tensor([t.vocab_idx for t in graph.logit_targets]),
               "logit_probabilities": graph.logit_probabilities.contiguous(), "input_tokens": graph.input_tokens,
               "node_mask": node_mask, "edge_mask": edge_mask, "cumulative": cumulative.contiguous()}, job["out"])
    if job.get("json_dir"):
        create_graph_files(graph, job["slug"], job["json_dir"], scan=graph.scan,
                           node_threshold=job.get("node_threshold", 0.8), edge_threshold=job.get("edge_threshold", 0.98))
    reply["attribute"] = {"replacement": replacement, "completeness": completeness, "seconds": measured.seconds,
                          "peak_mib": measured.mib, "rows": int(graph.selected_features.numel()),
                          "n_layers": model.cfg.n_layers, "warnings": warned}

json.dump(reply, open(sys.argv[2], "w"))
