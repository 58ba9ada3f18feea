"""Training a cross-layer transcoder (CLT): one joint step over every layer.

A CLT is stored as one dictionary per layer of ``--layers`` (``SET/layer_NN``, kind ``clt``): layer i's features
read layer i's MLP input, and its decoder writes one block per target layer, its own and every later one of the
CLT (``DictionaryConfig.targets``), so ``d_out = len(targets) · d_model``. Layer m's MLP output is reconstructed
from every layer at or below it:

    ŷ_m = Σ_{i ≤ m} z_i · W_dec_i[:, m − i] + b_dec_i[m − i]

and the loss is the sum over target layers of the squared error (each layer in its own normalised units), plus
each layer's sparsity penalty (for ReLU/JumpReLU weighted by the norm of the feature's whole decoder row, all its
target blocks together, as in Anthropic's recipe) and the auxiliary loss that revives dead TopK features (against
the error of the layers the feature writes to). Decoding is sparse for TopK/BatchTopK: an embedding bag over the
active features' rows, so the cost grows with active features × target layers, not with the width.

Memory (float32, d = d_model, F = width per layer, n layers): encoders n·F·d, decoders F·d·n(n+1)/2 parameters,
and Adam keeps two more copies of each: 4·3·F·d·(n + n(n+1)/2) bytes. For the default model (d = 576, n = 30) at
F = 1,152 (2x, the CLT's default width) that is 3.7 GiB; at F = 4,608 (8x, the per-layer sets' default) it would be
14.7 GiB, which with the 6 GiB shuffle buffer does not fit a 24 GiB machine (training checks before it starts).
"""

from __future__ import annotations

import math

import torch

from ..errors import TrainingDivergedError, TranscodersError
from .config import TrainConfig


def clt_bytes(width: int, d_model: int, n_layers: int) -> int:
    """Float32 weights plus Adam's two moments of a CLT: encoders ``n·F·d``, decoders ``F·d·n(n+1)/2``."""
    return 4 * 3 * width * d_model * (n_layers + n_layers * (n_layers + 1) // 2)


def check_clt_memory(width: int, d_model: int, n_layers: int, available: int, reserved: int) -> None:
    """A one-line error, before anything is harvested, when a CLT's weights and optimiser state (plus ``reserved``
    bytes for the rest of training: the shuffle buffer, the model) would not fit in ``available`` bytes."""
    need = clt_bytes(width, d_model, n_layers)
    if need + reserved > available:
        fits = max(1, (available - reserved) // clt_bytes(d_model, d_model, n_layers)) if available > reserved else 0
        hint = f"--expansion {fits} or less, or fewer --layers" if fits else "fewer --layers"
        raise TranscodersError(f"a CLT over {n_layers} layers of width {width:,} needs {need / 2**30:.1f} GiB for its "
                               f"weights and Adam state, and this machine has {available / 2**30:.1f} GiB with "
                               f"{reserved / 2**30:.1f} GiB for the rest of training: use {hint}")


def clt_targets(layer: int, layers: list[int]) -> list[int]:
    """The layers a CLT's layer-``layer`` features write to: it and every later layer of the CLT."""
    return [m for m in layers if m >= layer]


def clt_out_scale(targets: list[int], out_scales: dict[int, float], d_model: int) -> torch.Tensor:
    """``[len(targets) · d_model]``: each target block's output scale (to fold into a CLT layer's decoder)."""
    return torch.cat([torch.full((d_model,), float(out_scales[m])) for m in targets])


@torch.no_grad()
def clt_init_from_data(states: dict, pairs: dict[int, tuple[torch.Tensor, torch.Tensor]], l0: float) -> None:
    """Per-layer scales to unit mean squared norm; each layer's decoder bias starts at the mean of its own target
    (the later blocks at 0, so no layer's bias is counted twice), its encoder centred on its mean input."""
    for layer, st in states.items():
        x, y = (t[:65536].float() for t in pairs[layer])
        st.in_scale = float(1.0 / x.pow(2).sum(-1).mean().sqrt().clamp_min(1e-12))
        st.out_scale = float(1.0 / y.pow(2).sum(-1).mean().sqrt().clamp_min(1e-12))
        flat = torch.zeros(y.shape[0], st.dictionary.cfg.d_out)
        flat[:, : y.shape[1]] = y * st.out_scale
        st.dictionary.init_from_data(x * st.in_scale, flat, l0=l0)


def clt_step(states: dict, pairs: dict[int, tuple[torch.Tensor, torch.Tensor]], lr: float, l1: float,
             cfg: TrainConfig) -> dict[int, dict[str, float]]:
    """One Adam step of every layer of a CLT on one batch; per layer: the loss share, the FVU of its MLP output's
    reconstruction, the L0 and the dead share of its own features."""
    layers = sorted(states)
    xs = {m: pairs[m][0] * states[m].in_scale for m in layers}
    ys = {m: pairs[m][1] * states[m].out_scale for m in layers}
    d_model = next(iter(ys.values())).shape[-1]
    recon: dict[int, torch.Tensor] = {}
    encs = {}
    for i in layers:
        st = states[i]
        with torch.autocast(xs[i].device.type, dtype=st.autocast or torch.float32, enabled=st.autocast is not None):
            flat, encs[i] = st.dictionary.forward_sparse(xs[i], training=True)
        for j, m in enumerate(st.dictionary.cfg.targets):
            block = flat[:, j * d_model:(j + 1) * d_model].float()
            recon[m] = block if m not in recon else recon[m] + block
    errs = {m: ys[m] - recon[m] for m in layers}
    mses = {m: errs[m].pow(2).sum(-1).mean() for m in layers}
    loss = sum(mses.values())
    assert isinstance(loss, torch.Tensor)
    for i in layers:
        st, d = states[i], states[i].dictionary
        penalty = d.sparsity_penalty(encs[i])
        if penalty is not None:
            loss = loss + l1 * math.exp(st.log_l1_mult) * penalty
        dead = st.since_fired >= cfg.dead_tokens
        if d.act.uses_k and cfg.auxk_alpha > 0 and dead.any():
            err_flat = torch.cat([errs[m].detach() for m in d.cfg.targets], dim=-1)
            loss = loss + cfg.auxk_alpha * st._auxk_loss(xs[i], encs[i].pre, err_flat, dead)
    if not torch.isfinite(loss.detach()):
        raise TrainingDivergedError(f"the CLT's loss became {loss.item()}: lower --lr (now {cfg.lr:g}); the last "
                                    "checkpoint is kept, so `--resume` after changing nothing will hit this again")
    for st in states.values():
        st.optimizer.zero_grad(set_to_none=True)
        for group in st.optimizer.param_groups:
            group["lr"] = lr * group["lr_mult"]
    loss.backward()
    stats = {}
    with torch.no_grad():
        for m in layers:
            st, d = states[m], states[m].dictionary
            st.optimizer.step()
            d.after_step(encs[m])
            st.since_fired += xs[m].shape[0]
            st.since_fired[encs[m].fired(d.width)] = 0
            y = ys[m]
            total_var = (y - y.mean(0)).pow(2).sum().clamp_min(1e-12)
            stats[m] = {"loss": mses[m].item(), "fvu": (errs[m].pow(2).sum() / total_var).item(),
                        "l0": encs[m].l0().float().mean().item(),
                        "dead": (st.since_fired >= cfg.dead_tokens).float().mean().item()}
            if d.act.uses_penalty:
                stats[m]["l1"] = l1 * math.exp(st.log_l1_mult)
    return stats
