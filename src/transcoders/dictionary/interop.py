"""Move dictionaries between this tool and the formats other tools load.

* **SAELens** (``cfg.json`` + ``sae_weights.safetensors`` per SAE/transcoder):
  ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_out]``, ``b_dec [d_out]``,
  ``W_skip [d_out, d_in]`` (skip transcoders), ``threshold [d_sae]`` (JumpReLU).
  encode = act(x @ W_enc + b_enc) (we write ``apply_b_dec_to_input: false``), decode = z @ W_dec + b_dec.
  Architectures: ``standard``, ``topk``, ``jumprelu`` (SAEs); ``transcoder``, ``skip_transcoder``,
  ``jumprelu_transcoder``, ``jumprelu_skip_transcoder``. SAELens has no TopK transcoder.
* **circuit-tracer** per-layer transcoders (a folder: ``config.yaml`` + ``layer_{i}.safetensors``):
  ``W_enc [F, d]``, ``W_dec [F, d]``, ``b_enc [F]``, ``b_dec [d]``, optional ``W_skip [d, d]``
  and ``activation_function.threshold [F]`` (JumpReLU; absent means ReLU).
  encode = act(x @ W_enc.T + b_enc), decode = z @ W_dec + b_dec (+ x @ W_skip.T). circuit-tracer 0.5.0 has no TopK
  transcoder (it would read one as a ReLU), so TopK sets are refused; its sets cover layers 0..max.

Both are checked against the released tools in their own environments (``tests/peers``).

What is exported is a dictionary's inference form (:meth:`Dictionary.inference_form`): ReLU, TopK or JumpReLU.
BatchTopK is exported as what it is at inference, a JumpReLU with one shared threshold (as SAELens does).
Tensors are copied bit for bit, so export then import reproduces outputs exactly.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from ..errors import CheckpointError, RunExistsError
from ..models.named import DEFAULT_HF_ID
from ..paths import atomic_replace_dir, atomic_write_bytes, atomic_write_json
from .clt import blocks, check_whole_clt
from .io import load_dictionary, save_dictionary
from .module import Dictionary, DictionaryConfig
from .names import FORMATS, IMPORT_FORMATS
from .runs import layer_dir, refuse_clt, train_settings

SAELENS_CFG, SAELENS_WEIGHTS = "cfg.json", "sae_weights.safetensors"
SPARSIFY_WEIGHTS = "sae.safetensors"  # EleutherAI sparsify: {save_dir}/{run}/{hookpoint}/cfg.json + sae.safetensors
CT_CONFIG = "config.yaml"
# TransformerLens names for our MLP hook points (SAELens metadata; circuit-tracer uses mlp.hook_in/out).
TL_MLP_IN, TL_MLP_OUT = "blocks.{layer}.ln2.hook_normalized", "blocks.{layer}.hook_mlp_out"
CT_MLP_IN, CT_MLP_OUT = "mlp.hook_in", "mlp.hook_out"
CT_FORMS = ("relu", "jumprelu")  # the activations circuit-tracer 0.5.0 builds from a transcoder file
SAELENS_FORMAT = "6.0.0"  # the cfg.json layout written (SAELens reads the version to choose its parser)


def _site(hook: str) -> str:
    return "out" if hook.endswith(".out") else "in"


# ------------------------------------------------------------------ SAELens
def _saelens_architecture(kind: str, form: str) -> str:
    """SAELens's architecture name for a dictionary of ``kind`` whose inference form is ``form``."""
    if kind == "sae":
        return {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu"}[form]
    if form == "topk":
        raise CheckpointError(
            f"SAELens has no TopK {kind}: export it with --to circuit-tracer, or train with --activation batchtopk or relu"
        )
    base = "skip_transcoder" if kind == "skip-transcoder" else "transcoder"
    return f"jumprelu_{base}" if form == "jumprelu" else base


def export_saelens(d: Dictionary, out: Path, settings: dict | None = None) -> Path:
    """A SAELens 6 folder (``cfg.json`` + ``sae_weights.safetensors``) as SAELens itself writes one. ``settings``: the
    run's training settings, for the metadata SAELens keeps (context size, dataset)."""
    form = d.inference_form()
    arch = _saelens_architecture(d.cfg.kind, form.name)
    c = d.cfg
    settings = settings or {}
    hook_in = (TL_MLP_IN if _site(c.hook_in) == "in" else TL_MLP_OUT).format(layer=c.layer)
    hook_out = (TL_MLP_IN if _site(c.hook_out) == "in" else TL_MLP_OUT).format(layer=c.layer)
    tensors = {"W_enc": d.W_enc.detach().T.contiguous(), "b_enc": d.b_enc.detach().clone(),
               "W_dec": d.W_dec.detach().contiguous(), "b_dec": d.b_dec.detach().clone()}
    if d.W_skip is not None:
        tensors["W_skip"] = d.W_skip.detach().contiguous()
    if form.threshold is not None:
        tensors["threshold"] = form.threshold.contiguous()
    metadata = {
        # the cfg.json layout of SAELens 6 (without it SAELens reads the file as a pre-6.0 config and drops this block)
        "sae_lens_version": SAELENS_FORMAT, "sae_lens_training_version": None,
        "model_name": hub_name(c.model), "hook_name": hook_in, "hook_head_index": None, "prepend_bos": True,
        "exclude_special_tokens": True, "context_size": settings.get("ctx_len"), "dataset_path": settings.get("corpus"),
        "exported_by": f"transcoders {_our_version()}", "transcoders_config": c.to_dict(),
    }
    if c.kind != "sae":
        metadata.update({"hook_name_out": hook_out, "hook_head_index_out": None})
    cfg: dict = {"architecture": arch, "d_in": c.d_in, "d_sae": c.width, "dtype": str(d.W_enc.dtype).replace("torch.", ""),
                 "device": "cpu", "apply_b_dec_to_input": False, "normalize_activations": "none",
                 "reshape_activations": "none", "metadata": metadata}
    if c.kind != "sae":
        cfg["d_out"] = c.d_out
    if form.k is not None:
        cfg["k"] = form.k
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / SAELENS_WEIGHTS, save(tensors))
    atomic_write_json(out / SAELENS_CFG, cfg)
    return out


def _our_version() -> str:
    try:
        return version("transcoders")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def hub_name(model: str) -> str:
    """The name other tools know a model by: the hub id for the embedded default, else ours (an id or a folder)."""
    return DEFAULT_HF_ID if model == "default" else model


def our_model(name: str | None) -> str:
    """The inverse of :func:`hub_name`."""
    return "default" if name == DEFAULT_HF_ID else (name or "")


def import_saelens(src: Path, model: str | None = None) -> Dictionary:
    try:
        cfg = json.loads((src / SAELENS_CFG).read_text())
        t = load_file(str(src / SAELENS_WEIGHTS))
    except (OSError, json.JSONDecodeError, SafetensorError) as e:
        raise CheckpointError(f"{src} is not a readable SAELens folder ({str(e).splitlines()[0]})") from None
    arch = cfg.get("architecture", "standard")
    known = {"standard": ("sae", "relu"), "topk": ("sae", "topk"), "jumprelu": ("sae", "jumprelu"),
             "transcoder": ("transcoder", "relu"), "skip_transcoder": ("skip-transcoder", "relu"),
             "jumprelu_transcoder": ("transcoder", "jumprelu"), "jumprelu_skip_transcoder": ("skip-transcoder", "jumprelu")}
    if arch not in known:
        raise CheckpointError(f"{src}: SAELens architecture {arch!r} cannot be imported (supported: {', '.join(known)})")
    if cfg.get("apply_b_dec_to_input") and "b_dec" in t:
        if arch not in ("standard", "topk", "jumprelu"):
            raise CheckpointError(f"{src}: apply_b_dec_to_input on a transcoder is not supported")
        t["b_enc"] = t["b_enc"] - t["b_dec"] @ t["W_enc"]  # fold: (x - b_dec) @ W_enc + b_enc
    if cfg.get("normalize_activations", "none") != "none":
        raise CheckpointError(f"{src}: normalize_activations={cfg['normalize_activations']!r} is not supported: fold the "
                              "scaling into the weights first")
    kind, act = known[arch]
    meta = cfg.get("metadata") or {}
    ours = meta.get("transcoders_config") or {}
    hook_in = meta.get("hook_name") or cfg.get("hook_name", "")
    hook_out = meta.get("hook_name_out") or cfg.get("hook_name_out") or hook_in  # 6.x keeps it in metadata
    layer = _layer_of(hook_in, src)
    dcfg = DictionaryConfig(
        d_in=t["W_enc"].shape[0], d_out=t["W_dec"].shape[1], width=t["W_enc"].shape[1], kind=kind, activation=act,
        k=cfg.get("k"), model=model or ours.get("model") or our_model(meta.get("model_name")),
        model_type=ours.get("model_type", ""), layer=layer,
        hook_in=f"blocks.{layer}.mlp.{_mlp_site(hook_in, src)}", hook_out=f"blocks.{layer}.mlp.{_mlp_site(hook_out, src)}",
        extra={"imported_from": "saelens", "source": str(src)},
    )
    tensors = {"W_enc": t["W_enc"].T.contiguous(), "b_enc": t["b_enc"], "W_dec": t["W_dec"], "b_dec": t["b_dec"]}
    if "W_skip" in t:
        tensors["W_skip"] = t["W_skip"]
    if act == "jumprelu":
        tensors["threshold"] = t["threshold"]
    return _build(dcfg, tensors, src)


# ------------------------------------------------------------ EleutherAI sparsify
def import_sparsify(src: Path, model: str | None = None) -> Dictionary:
    """One sparsify hookpoint folder. Its TopK is ``topk(relu(x W_enc^T + b_enc))``, the same codes as ours; a
    transcoder reads the hooked module's input and predicts its output, an SAE reconstructs the output; an SAE
    subtracts ``b_dec`` from its input (folded into ``b_enc`` here)."""
    try:
        cfg = json.loads((src / SAELENS_CFG).read_text())
        t = load_file(str(src / SPARSIFY_WEIGHTS))
    except (OSError, json.JSONDecodeError, SafetensorError) as e:
        raise CheckpointError(f"{src} is not a readable sparsify folder ({str(e).splitlines()[0]})") from None
    if cfg.get("activation", "topk") != "topk":
        raise CheckpointError(f"{src}: sparsify activation {cfg.get('activation')!r} cannot be imported (only topk)")
    if "W_dec" not in t:
        raise CheckpointError(f"{src}: this sparsify checkpoint has no decoder (saved with decoder=False)")
    layer = _layer_of(src.name + ".", src)
    if not re.search(r"mlp$", src.name):
        raise CheckpointError(f"{src}: hookpoint {src.name!r} is not an MLP module; only MLP dictionaries can be imported")
    transcode = bool(cfg.get("transcode"))
    W_enc, b_enc = t["encoder.weight"], t["encoder.bias"]
    if not transcode:  # encode(x - b_dec)
        b_enc = b_enc - W_enc @ t["b_dec"]
    kind = ("skip-transcoder" if "W_skip" in t else "transcoder") if transcode else "sae"
    dcfg = DictionaryConfig(
        d_in=W_enc.shape[1], d_out=t["W_dec"].shape[1], width=W_enc.shape[0], kind=kind, activation="topk",
        k=int(cfg["k"]), model=model or "", layer=layer, hook_in=f"blocks.{layer}.mlp.{'in' if transcode else 'out'}",
        hook_out=f"blocks.{layer}.mlp.out", extra={"imported_from": "sparsify", "source": str(src)},
    )
    tensors = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": t["W_dec"], "b_dec": t["b_dec"]}
    if "W_skip" in t:
        tensors["W_skip"] = t["W_skip"]
    return _build(dcfg, {k: v.float().contiguous() for k, v in tensors.items()}, src)


# ------------------------------------------------------------ circuit-tracer
def export_circuit_tracer(dicts: list[Dictionary], out: Path, scan: str = "") -> Path:
    """A circuit-tracer transcoder set: ``layer_{i}.safetensors`` per layer and a ``config.yaml`` that its
    ``load_transcoders`` (the config as a dict) and ``ReplacementModel.from_pretrained(model, FOLDER)`` both read.
    ``scan`` names the set in its graphs (default: the folder's name)."""
    kinds = {d.cfg.kind for d in dicts}
    if "sae" in kinds:
        raise CheckpointError("circuit-tracer loads transcoders, not SAEs: export SAEs with --to saelens")
    if "clt" in kinds:
        return export_circuit_tracer_clt(dicts, out, scan)
    widths = {d.width for d in dicts}
    if len(widths) != 1:
        raise CheckpointError(f"circuit-tracer needs one width for all layers, these runs have {sorted(widths)}")
    forms = _ct_forms(dicts)
    layers = sorted(forms)
    if layers != list(range(layers[-1] + 1)):
        raise CheckpointError(f"circuit-tracer needs a transcoder for every layer from 0 up (these runs have layers "
                              f"{layers}): train the missing ones, e.g. `transcoders train --layers 0-{layers[-1]}`")
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for d in sorted(dicts, key=lambda d: d.cfg.layer):
        t = {"W_enc": d.W_enc.detach().contiguous(), "W_dec": d.W_dec.detach().contiguous(),
             "b_enc": d.b_enc.detach().clone(), "b_dec": d.b_dec.detach().clone()}
        if d.W_skip is not None:
            t["W_skip"] = d.W_skip.detach().contiguous()
        threshold = forms[d.cfg.layer].threshold
        if threshold is not None:
            t["activation_function.threshold"] = threshold.contiguous()
        name = f"layer_{d.cfg.layer}.safetensors"
        atomic_write_bytes(out / name, save(t, metadata={"transcoders_config": json.dumps(d.cfg.to_dict())}))
        files.append(name)
    cfg = {"model_kind": "transcoder_set", "model_name": hub_name(dicts[0].cfg.model),
           "feature_input_hook": CT_MLP_IN, "feature_output_hook": CT_MLP_OUT,
           "scan": scan or out.resolve().name, "transcoders": [str((out / f).resolve()) for f in files]}
    atomic_write_bytes(out / CT_CONFIG, yaml.safe_dump(cfg, sort_keys=False).encode())
    return out


def _ct_forms(dicts: list[Dictionary]) -> dict:
    """Each layer's inference form, checked to be one circuit-tracer builds (a one-line error otherwise)."""
    forms = {d.cfg.layer: d.inference_form() for d in dicts}
    if any(f.name not in CT_FORMS for f in forms.values()):
        # circuit-tracer 0.5.0 reads neither `activation: topk` nor `k`: it would build a ReLU from these tensors
        raise CheckpointError("circuit-tracer 0.5.0 has no TopK transcoders and would load this set as ReLU: use "
                              "a --activation batchtopk (exported as an exact JumpReLU), jumprelu or relu set for "
                              "circuit-tracer; every transcoders command takes the TopK set as it is")
    return forms


def export_circuit_tracer_clt(dicts: list[Dictionary], out: Path, scan: str = "") -> Path:
    """A cross-layer transcoder in circuit-tracer's layout: per layer i, ``W_enc_{i}.safetensors`` (``W_enc_{i}``
    [F, d], ``b_enc_{i}``, ``b_dec_{i}`` [d] and for JumpReLU ``threshold_{i}`` [F]) and ``W_dec_{i}.safetensors``
    (``W_dec_{i}`` [F, n − i, d]), with a ``config.yaml`` of ``model_kind: cross_layer_transcoder``. circuit-tracer
    keeps one decoder bias per target layer: ours (one per source layer and target block) are summed into it."""
    check_whole_clt([d.cfg for d in dicts], "export")
    dicts = sorted(dicts, key=lambda d: d.cfg.layer)
    n = len(dicts)
    if [d.cfg.layer for d in dicts] != list(range(n)):
        raise CheckpointError(f"circuit-tracer's CLTs start at layer 0 and cover every layer: this one has layers "
                              f"{[d.cfg.layer for d in dicts]}; train it with `--layers all`")
    if len({d.width for d in dicts}) != 1:
        raise CheckpointError("circuit-tracer needs one width for every layer of a CLT")
    forms = _ct_forms(dicts)
    out.mkdir(parents=True, exist_ok=True)
    b_dec = torch.zeros(n, dicts[0].cfg.d_in)
    for d in dicts:
        for m, b in blocks(d, d.b_dec.detach()).items():
            b_dec[m] += b
    for d in dicts:
        i = d.cfg.layer
        enc = {f"W_enc_{i}": d.W_enc.detach().contiguous(), f"b_enc_{i}": d.b_enc.detach().clone(),
               f"b_dec_{i}": b_dec[i].clone()}
        threshold = forms[i].threshold
        if threshold is not None:
            enc[f"threshold_{i}"] = threshold.expand(d.width).contiguous()
        meta = {"transcoders_config": json.dumps(d.cfg.to_dict())}
        atomic_write_bytes(out / f"W_enc_{i}.safetensors", save(enc, metadata=meta))
        atomic_write_bytes(out / f"W_dec_{i}.safetensors", save({f"W_dec_{i}": d.decoder_blocks().detach().contiguous()}))
    cfg = {"model_kind": "cross_layer_transcoder", "model_name": hub_name(dicts[0].cfg.model),
           "feature_input_hook": CT_MLP_IN, "feature_output_hook": CT_MLP_OUT, "scan": scan or out.resolve().name}
    atomic_write_bytes(out / CT_CONFIG, yaml.safe_dump(cfg, sort_keys=False).encode())
    return out


def import_circuit_tracer_clt(src: Path, cfg: dict, model: str | None = None) -> list[Dictionary]:
    """A circuit-tracer cross-layer transcoder as one dictionary of kind ``clt`` per layer; its per-target decoder
    bias goes to the target layer's own block."""
    n = len(list(src.glob("W_enc_*.safetensors")))
    if not n:
        raise CheckpointError(f"{src} says it holds a cross-layer transcoder but has no W_enc_*.safetensors")
    out = []
    for i in range(n):
        try:
            enc, dec = load_file(str(src / f"W_enc_{i}.safetensors")), load_file(str(src / f"W_dec_{i}.safetensors"))
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{src}: layer {i} of the CLT is missing or corrupt ({str(e).splitlines()[0]})") from None
        W_dec = dec[f"W_dec_{i}"]
        width, d_model = enc[f"W_enc_{i}"].shape
        if W_dec.shape != (width, n - i, d_model):
            raise CheckpointError(f"{src}: W_dec_{i} has shape {tuple(W_dec.shape)}, not {(width, n - i, d_model)}")
        ours = _our_config(src / f"W_enc_{i}.safetensors")
        act = "jumprelu" if f"threshold_{i}" in enc else "relu"
        dcfg = DictionaryConfig(
            d_in=d_model, d_out=(n - i) * d_model, width=width, kind="clt", activation=act, k=None,
            model=model or ours.get("model") or our_model(cfg.get("model_name")), model_type=ours.get("model_type", ""),
            layer=i, hook_in=f"blocks.{i}.mlp.in", hook_out=f"blocks.{i}.mlp.out",
            extra={"targets": list(range(i, n)), "clt_layers": list(range(n)), "imported_from": "circuit-tracer",
                   "source": str(src)},
        )
        b_dec = torch.zeros((n - i) * d_model)
        b_dec[:d_model] = enc[f"b_dec_{i}"]
        tensors = {"W_enc": enc[f"W_enc_{i}"], "b_enc": enc[f"b_enc_{i}"], "W_dec": W_dec.reshape(width, -1),
                   "b_dec": b_dec.to(W_dec.dtype)}
        if act == "jumprelu":
            tensors["threshold"] = enc[f"threshold_{i}"]
        out.append(_build(dcfg, tensors, src))
    return out


def import_circuit_tracer(src: Path, model: str | None = None) -> list[Dictionary]:
    cfg: dict = {}
    if (src / CT_CONFIG).exists():
        try:
            cfg = yaml.safe_load((src / CT_CONFIG).read_text()) or {}
        except yaml.YAMLError as e:
            raise CheckpointError(f"{src / CT_CONFIG} is not valid YAML ({str(e).splitlines()[0]})") from None
    if cfg.get("model_kind") == "cross_layer_transcoder" or (src / "W_enc_0.safetensors").exists():
        return import_circuit_tracer_clt(src, cfg, model)
    files = sorted(src.glob("layer_*.safetensors"), key=lambda p: int(re.findall(r"\d+", p.stem)[0]))
    if not files:
        raise CheckpointError(f"{src} holds no layer_*.safetensors: not a circuit-tracer transcoder folder")
    out = []
    for f in files:
        layer = int(re.findall(r"\d+", f.stem)[0])
        try:
            t = load_file(str(f))
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{f} is corrupt ({str(e).splitlines()[0]})") from None
        # a threshold means JumpReLU; `activation: topk` (upstream circuit-tracer's hub sets) means TopK; else ReLU
        act = "jumprelu" if "activation_function.threshold" in t else ("topk" if cfg.get("activation") == "topk" else "relu")
        ours = _our_config(f)
        width, d_in = t["W_enc"].shape
        dcfg = DictionaryConfig(
            d_in=d_in, d_out=t["W_dec"].shape[1], width=width, kind="skip-transcoder" if "W_skip" in t else "transcoder",
            activation=act, k=cfg.get("k") if act == "topk" else None,
            model=model or ours.get("model") or our_model(cfg.get("model_name")),
            model_type=ours.get("model_type", ""), layer=layer, hook_in=f"blocks.{layer}.mlp.in",
            hook_out=f"blocks.{layer}.mlp.out",
            extra={"imported_from": "circuit-tracer", "source": str(f)},
        )
        tensors: dict[str, torch.Tensor] = {k: t[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec", "W_skip") if k in t}
        if act == "jumprelu":
            tensors["threshold"] = t["activation_function.threshold"]
        out.append(_build(dcfg, tensors, f))
    return out


# ----------------------------------------------------------------- commands
def export_runs(run_dirs: list[Path], fmt: str, out: Path) -> list[Path]:
    """Write ``run_dirs`` in format ``fmt`` under ``out``; returns what was written."""
    dicts = [load_dictionary(r) for r in run_dirs]
    if fmt != "circuit-tracer":
        refuse_clt(run_dirs, [d.cfg for d in dicts], f"export to {fmt}")
    if fmt == "circuit-tracer":
        return [export_circuit_tracer(dicts, out)]
    if fmt == "saelens":
        if len(dicts) == 1:
            return [export_saelens(dicts[0], out, train_settings(run_dirs[0]))]
        return [export_saelens(d, layer_dir(out, d.cfg.layer), train_settings(r)) for d, r in zip(dicts, run_dirs)]
    raise CheckpointError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")


def detect_format(src: Path) -> str:
    if (src / SPARSIFY_WEIGHTS).exists() or any(src.glob(f"*/{SPARSIFY_WEIGHTS}")):
        return "sparsify"
    if (src / SAELENS_CFG).exists():
        return "saelens"
    if (src / CT_CONFIG).exists() or any(src.glob("layer_*.safetensors")) or (src / "W_enc_0.safetensors").exists():
        return "circuit-tracer"
    if any(src.glob(f"*/{SAELENS_CFG}")):
        return "saelens"
    raise CheckpointError(f"{src} is not a SAELens folder ({SAELENS_CFG}), a circuit-tracer folder ({CT_CONFIG}, "
                          f"layer_*.safetensors) or a sparsify folder ({SPARSIFY_WEIGHTS})")


def import_runs(src: Path, out: Path, fmt: str | None = None, model: str | None = None) -> list[Path]:
    """Read another tool's dictionaries from ``src`` into run folder(s) under ``out``."""
    if not src.is_dir():
        raise CheckpointError(f"{src} is not a folder")
    fmt = fmt or detect_format(src)
    if fmt == "saelens":
        subdirs = [src] if (src / SAELENS_CFG).exists() else sorted(p.parent for p in src.glob(f"*/{SAELENS_CFG}"))
        dicts = [import_saelens(p, model) for p in subdirs]
    elif fmt == "circuit-tracer":
        dicts = import_circuit_tracer(src, model)
    elif fmt == "sparsify":
        subdirs = [src] if (src / SPARSIFY_WEIGHTS).exists() else sorted(p.parent for p in src.glob(f"*/{SPARSIFY_WEIGHTS}"))
        dicts = [import_sparsify(p, model) for p in subdirs]
    else:
        raise CheckpointError(f"unknown format {fmt!r}: use one of {', '.join(IMPORT_FORMATS)}")
    if len(dicts) == 1:
        save_dictionary(dicts[0], out)
        return [out]
    runs = [layer_dir(out, d.cfg.layer) for d in dicts]
    for d, run in zip(dicts, runs):
        save_dictionary(d, run)
    return runs


def import_folder(src: Path, out: Path, fmt: str | None = None, model: str | None = None,
                  overwrite: bool = False) -> list[Path]:
    """:func:`import_runs` into a fresh sibling folder, swapped in for ``out`` only when complete: a failed import
    loses nothing. An existing non-empty ``out`` needs ``overwrite``."""
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise RunExistsError(f"{out} already exists: pass --overwrite to replace it, or choose another folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.import."))
    try:
        paths = import_runs(src, tmp / "run", fmt=fmt, model=model)
        atomic_replace_dir(tmp / "run", out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [out / p.relative_to(tmp / "run") for p in paths]


# ------------------------------------------------------------------ helpers
def _build(dcfg: DictionaryConfig, tensors: dict[str, torch.Tensor], src: Path) -> Dictionary:
    d = Dictionary(dcfg, dtype=tensors["W_enc"].dtype)
    expected = {k: tuple(v.shape) for k, v in d.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != got:
        raise CheckpointError(f"{src}: tensor shapes {got} do not fit a {dcfg.kind}/{dcfg.activation} of width {dcfg.width}")
    d.load_state_dict(tensors)
    return d


def _layer_of(hook: str, src: Path) -> int:
    m = re.search(r"(?:blocks|layers)\.(\d+)\.", hook)
    if not m:
        raise CheckpointError(f"{src}: cannot tell the layer from hook name {hook!r}")
    return int(m.group(1))


def _mlp_site(hook: str, src: Path) -> str:
    if re.search(r"hook_mlp_out$|mlp\.hook_out$|mlp\.out$", hook):
        return "out"
    if re.search(r"ln2\.hook_normalized$|hook_mlp_in$|mlp\.hook_in$|mlp\.in$", hook):
        return "in"
    raise CheckpointError(f"{src}: hook {hook!r} is not an MLP input or output; only MLP dictionaries can be imported")


def _our_config(f: Path) -> dict:
    with safe_open(str(f), "pt") as h:
        meta = h.metadata() or {}
    try:
        return json.loads(meta.get("transcoders_config", "{}"))
    except json.JSONDecodeError:
        return {}
