"""Train one dictionary per layer from a single stream of model activations.

The loop is plain on purpose: fetch a batch (all layers), one Adam step per layer,
log, checkpoint. Everything that decides *which* batch comes next lives in
:class:`~transcoders.data.activations.ActivationSource`; everything that must survive
a SIGKILL lives in one atomically written ``checkpoint.safetensors``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from tqdm.auto import tqdm

from ..data.activations import ActivationSource, hook_names
from ..data.packing import load_split
from ..dictionary import Dictionary, DictionaryConfig, save_dictionary
from ..dictionary import runs as R
from ..dictionary.runs import CHECKPOINT_FILE, TRAIN_CONFIG_FILE, TRAIN_LOG_FILE
from ..distributed import Group
from ..errors import CheckpointError, ModelError, RunExistsError, TrainingDivergedError, TranscodersError
from ..models import LoadedModel, load_model, model_layer_count
from ..paths import atomic_write_bytes, atomic_write_json
from .clt import check_clt_memory, clt_init_from_data, clt_out_scale, clt_step, clt_targets
from .config import TrainConfig, parse_layers


# ------------------------------------------------------------------ schedules
def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up, constant, linear decay to 0 over the last ``lr_decay`` of steps."""
    warm = max(1, int(cfg.lr_warmup * total))
    decay = int(cfg.lr_decay * total)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if decay and step >= total - decay:
        return cfg.lr * max(0.0, (total - step) / decay)
    return cfg.lr


def l1_at(step: int, total: int, cfg: TrainConfig) -> float:
    warm = int(cfg.l1_warmup * total)
    lam = cfg.sparsity_coefficient
    return lam * min(1.0, (step + 1) / warm) if warm else lam


# The --target-l0 controller (see LayerState.steer_l1): log λ = integral + KP · error, the integral grows by
# GAIN · error per step, error = log(L0 / setpoint); the setpoint glides to the target over L0_GLIDE of training.
L0_CONTROLLER_GAIN = 0.01
L0_CONTROLLER_KP = 1.0
L0_GLIDE = 0.5


def make_adam(d: Dictionary, lr: float) -> torch.optim.Adam:
    """Adam over the dictionary's parameter groups (each with an ``lr_mult``); the fused kernel where torch has one
    (3x faster than the default loop on CPU)."""
    groups = d.param_groups()
    try:
        return torch.optim.Adam(groups, lr=lr, betas=(0.9, 0.999), fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(groups, lr=lr, betas=(0.9, 0.999))


# ------------------------------------------------------------- per-layer state
@dataclass
class LayerState:
    """A dictionary being trained on one layer, in normalised units, and its bookkeeping."""

    layer: int
    dictionary: Dictionary
    optimizer: torch.optim.Adam
    in_scale: float = 1.0  # x_normalised = x * in_scale  (mean squared norm 1)
    out_scale: float = 1.0
    # [width] tokens since each feature last fired
    since_fired: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    log_l1_mult: float = 0.0  # the --target-l0 controller's output: λ = scheduled λ · exp(log_l1_mult)
    l0_integral: float = 0.0  # ... its integral state
    l0_start: float = 0.0  # ... and the L0 it started from (the setpoint glides from there to the target)
    group: Group = field(default_factory=Group)  # data parallel: the ranks that share this layer's batches
    autocast: torch.dtype | None = None  # GPU, --dtype bfloat16/float16: the step's forward under autocast

    def step(self, x: torch.Tensor, y: torch.Tensor, lr: float, l1: float, cfg: TrainConfig) -> dict[str, float]:
        d = self.dictionary
        x = x * self.in_scale
        y = y * self.out_scale
        with torch.autocast(x.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None):
            y_hat, enc = d.forward_sparse(x, training=True)
        err = y - y_hat.float()
        mse = err.pow(2).sum(-1).mean()
        loss = mse
        stats = {}
        l1 = l1 * math.exp(self.log_l1_mult)
        penalty = d.sparsity_penalty(enc)
        if penalty is not None:
            loss = loss + l1 * penalty
        dead = self.since_fired >= cfg.dead_tokens
        if d.act.uses_k and cfg.auxk_alpha > 0 and dead.any():
            loss = loss + cfg.auxk_alpha * self._auxk_loss(x, enc.pre, err.detach(), dead)
        g = self.group
        if g.any_(~torch.isfinite(loss.detach()).reshape(1)).item():  # every rank stops, not only the one that saw it
            raise TrainingDivergedError(
                f"layer {self.layer}: the loss became {loss.item()} : lower --lr (now {cfg.lr:g})"
                + (f" or --l1 (now {cfg.sparsity_coefficient:g})" if d.act.uses_penalty else "")
                + "; the last checkpoint is kept, so `--resume` after changing nothing will hit this again"
            )
        self.optimizer.zero_grad(set_to_none=True)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_mult"]
        loss.backward()
        # Each rank's loss is a mean over its rows (or carries the global normaliser), so the mean of the ranks'
        # gradients is the gradient of the global batch's loss.
        g.average_([p.grad for p in d.parameters() if p.grad is not None])
        self.optimizer.step()
        d.after_step(enc, reduce_min=g.min)
        with torch.no_grad():
            self.since_fired += x.shape[0] * g.world
            self.since_fired[g.any_(enc.fired(d.width))] = 0
            # FVU over the global batch: Σ err² / (Σ y² − (Σ y)² / n), the sums taken over all ranks
            sums = g.sum(torch.cat([err.pow(2).sum().reshape(1), y.pow(2).sum().reshape(1), y.sum(0),
                                    torch.tensor([float(x.shape[0]), loss.item(), enc.l0().float().sum().item()],
                                                 device=x.device)]))
            n = sums[-3]
            total_var = sums[1] - sums[2:-3].pow(2).sum() / n
            stats = {
                "loss": (sums[-2] / g.world).item(),
                "fvu": (sums[0] / total_var).item(),
                "l0": (sums[-1] / n).item(),
                "dead": dead.float().mean().item(),
            }
            if d.act.uses_penalty:
                stats["l1"] = l1
        return stats

    def steer_l1(self, l0: float, cfg: TrainConfig, progress: float) -> None:
        """One step of the --target-l0 controller (called once λ has warmed up).

        A PI controller on log(L0 / setpoint). The setpoint glides geometrically from the L0 seen when
        the controller starts to the target over the first half of training (``progress`` = fraction of
        steps done): ReLU features pushed below zero rarely come back, so overshooting the target is
        costly and approaching it from above, slowly, is what lands it.
        """
        if cfg.target_l0 > 0 and self.dictionary.act.uses_penalty:
            if self.l0_start <= 0:
                self.l0_start = max(l0, 0.1)
            glide = min(1.0, progress / L0_GLIDE)
            setpoint = cfg.target_l0 * (self.l0_start / cfg.target_l0) ** (1.0 - glide)
            err = math.log(max(l0, 0.1) / setpoint)
            self.l0_integral = min(max(self.l0_integral + L0_CONTROLLER_GAIN * err, -20.0), 20.0)
            self.log_l1_mult = self.l0_integral + L0_CONTROLLER_KP * err

    def _auxk_loss(self, x: torch.Tensor, pre: torch.Tensor, err: torch.Tensor, dead: torch.Tensor) -> torch.Tensor:
        """Reconstruct the residual error from the top dead features (Gao et al. 2024), normalised by its variance."""
        d = self.dictionary
        n_dead = int(dead.sum())
        k_aux = min(d.cfg.d_out // 2, n_dead)
        with torch.no_grad():
            idx = pre.masked_fill(~dead, float("-inf")).topk(k_aux, dim=-1, sorted=False).indices
        vals = d.preacts_at(x, pre, idx)
        err_hat = F.embedding_bag(idx, d.W_dec, per_sample_weights=F.relu(vals).to(d.W_dec.dtype), mode="sum")
        scale = min(n_dead / k_aux, 1.0)
        # normalised by the error's variance over the global batch; × world, as the ranks' gradients are averaged
        g = self.group
        s = g.sum(torch.cat([err.pow(2).sum().reshape(1), err.sum(0), torch.tensor([float(err.shape[0])], device=err.device)]))
        var = (s[0] - s[1:-1].pow(2).sum() / s[-1]).clamp_min(1e-12)
        return scale * g.world * (err - err_hat).pow(2).sum() / var


# ------------------------------------------------------------------ the trainer
class Trainer:
    """Trains ``layers`` from one activation stream. Under torchrun (``group``) this rank trains ``owned``: every
    layer on its slice of each batch (data parallel), or whole batches of its own layers (``--distribute-layers``)."""

    def __init__(self, cfg: TrainConfig, lm: LoadedModel, source: ActivationSource, layers: list[int], out: Path,
                 group: Group | None = None, device: str | None = None):
        self.cfg = cfg
        self.lm = lm
        self.source = source
        self.layers = layers
        self.out = out
        self.group = group or Group()
        self.device = device or cfg.device
        self.owners = layer_owners(layers, self.group, cfg.distribute_layers)
        self.owned = [L for L in layers if self.owners is None or self.owners[L] == self.group.rank]
        data_parallel = self.group.distributed and self.owners is None
        self.part = self.group.share(cfg.batch_size) if data_parallel else slice(None)  # rows of each batch
        self.batch_group = self.group if data_parallel else Group()  # who averages gradients with whom
        self.total_steps = max(1, cfg.tokens // cfg.batch_size)
        self.step = 0
        self.chunk = 0
        self.batch = 0
        self.states: dict[int, LayerState] = {}

    def run_dir(self, layer: int) -> Path:
        return R.run_dir(self.out, layer, len(self.layers))

    def dictionary_config(self, layer: int) -> DictionaryConfig:
        a = self.lm.adapter
        width = self.cfg.dictionary_width(a.d_model)
        hin, hout = hook_names(layer)
        if self.cfg.kind == "sae":
            hin = hout = hout if self.cfg.sae_site == "mlp-out" else hin
        targets = clt_targets(layer, self.layers) if self.cfg.kind == "clt" else [layer]
        return DictionaryConfig(
            d_in=a.d_model, d_out=a.d_model * len(targets), width=width, kind=self.cfg.kind,
            activation=self.cfg.activation, k=self.cfg.k,
            model=self.lm.name, model_type=self.lm.model.config.model_type, layer=layer,
            hook_in=hin, hook_out=hout,
            extra={"targets": targets, "clt_layers": list(self.layers)} if self.cfg.kind == "clt" else {},
        )

    def _new_state(self, layer: int) -> LayerState:
        dcfg = self.dictionary_config(layer)
        g = torch.Generator().manual_seed(self.cfg.seed * 1000 + layer)
        d = Dictionary(dcfg)
        d.reset_parameters(generator=g)
        d.to(self.device)
        d.bandwidth = self.cfg.jumprelu_bandwidth
        opt = make_adam(d, self.cfg.lr)
        dtype = self.cfg.torch_dtype(self.device)
        return LayerState(layer, d, opt, since_fired=torch.zeros(dcfg.width, dtype=torch.long, device=self.device),
                          group=self.batch_group,
                          autocast=dtype if dtype != torch.float32 and not str(self.device).startswith("cpu") else None)

    @torch.no_grad()
    def init_from_data(self, pairs: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Scales to unit mean squared norm, then the dictionary starts from the normalised data (biases, and
        JumpReLU thresholds for about the target L0, else k, active features)."""
        if self.cfg.kind == "clt":
            return clt_init_from_data(self.states, pairs, l0=self.cfg.target_l0 or self.cfg.k)
        for layer, st in self.states.items():
            x, y = st.dictionary.cfg.pick(*pairs[layer])
            x, y = x[:65536].float(), y[:65536].float()
            st.in_scale = float(1.0 / x.pow(2).sum(-1).mean().sqrt().clamp_min(1e-12))
            st.out_scale = float(1.0 / y.pow(2).sum(-1).mean().sqrt().clamp_min(1e-12))
            st.dictionary.init_from_data(x * st.in_scale, y * st.out_scale, l0=self.cfg.target_l0 or self.cfg.k)

    # --------------------------------------------------------------- checkpoint
    def _layer_states(self) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
        """This rank's layers as checkpoint tensors (on the CPU) and their JSON state."""
        tensors: dict[str, torch.Tensor] = {}
        layers = {}
        for layer, st in self.states.items():
            for k, v in st.dictionary.state_dict().items():
                tensors[f"{layer}/dict/{k}"] = v.detach().cpu().contiguous()
            for name, p in st.dictionary.named_parameters():
                s = st.optimizer.state.get(p)
                if s:
                    tensors[f"{layer}/adam/{name}/exp_avg"] = s["exp_avg"].cpu().contiguous()
                    tensors[f"{layer}/adam/{name}/exp_avg_sq"] = s["exp_avg_sq"].cpu().contiguous()
                    tensors[f"{layer}/adam/{name}/step"] = torch.as_tensor(s["step"]).cpu().reshape(1).float()
            tensors[f"{layer}/since_fired"] = st.since_fired.cpu().clone()
            layers[str(layer)] = {"in_scale": st.in_scale, "out_scale": st.out_scale, "log_l1_mult": st.log_l1_mult,
                                  "l0_integral": st.l0_integral, "l0_start": st.l0_start}
        return tensors, layers

    def _gathered_states(self) -> tuple[dict[str, torch.Tensor], dict[str, dict]] | None:
        """Every layer's checkpoint state, on rank 0 (None on the others). Data-parallel ranks hold the same
        states, so only rank 0's are used; with --distribute-layers each rank sends its own layers."""
        if self.owners is None:
            return self._layer_states() if self.group.main else None
        parts = self.group.gather_objects(self._layer_states())
        if parts is None:
            return None
        tensors, layers = {}, {}
        for t, states in parts:
            tensors.update(t)
            layers.update(states)
        return tensors, layers

    def save_checkpoint(self, gathered=None) -> None:
        """Written once, by rank 0, atomically: every layer and the global data position."""
        gathered = gathered or self._gathered_states()
        if gathered is None:
            return
        tensors, layers = gathered
        meta = {"step": self.step, "chunk": self.chunk, "batch": self.batch, "layers": layers}
        atomic_write_bytes(self.out / CHECKPOINT_FILE, save(tensors, metadata={"state": json.dumps(meta)}))

    def load_checkpoint(self) -> bool:
        path = self.out / CHECKPOINT_FILE
        if not path.exists():
            return False
        meta = read_checkpoint_state(path)
        try:  # this rank's layers only (with --distribute-layers a full set's checkpoint is large)
            mine = tuple(f"{layer}/" for layer in self.states)
            with safe_open(str(path), "pt") as f:
                tensors = {k: f.get_tensor(k) for k in f.keys() if k.startswith(mine)}
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise _corrupt(path, e) from None
        if set(meta["layers"]) != {str(L) for L in self.layers}:
            raise CheckpointError(f"{path} holds layers {sorted(meta['layers'])}, but the run trains {self.layers}")
        self.step, self.chunk, self.batch = meta["step"], meta["chunk"], meta["batch"]
        for layer, st in self.states.items():
            sd = {k.split("/", 2)[2]: v for k, v in tensors.items() if k.startswith(f"{layer}/dict/")}
            try:
                st.dictionary.load_state_dict(sd)
            except RuntimeError as e:
                raise CheckpointError(f"{path} does not fit this run's dictionary ({str(e).splitlines()[0][:120]})") from None
            fused = any(g.get("fused") for g in st.optimizer.param_groups)
            for name, p in st.dictionary.named_parameters():
                key = f"{layer}/adam/{name}"
                if f"{key}/exp_avg" in tensors:
                    step = tensors[f"{key}/step"].reshape(()).clone()
                    st.optimizer.state[p] = {
                        "step": step.to(p.device) if fused else step,  # fused Adam wants it beside the weights
                        "exp_avg": tensors[f"{key}/exp_avg"].to(p.device),
                        "exp_avg_sq": tensors[f"{key}/exp_avg_sq"].to(p.device),
                    }
            st.since_fired = tensors[f"{layer}/since_fired"].to(self.device).clone()
            st.in_scale = meta["layers"][str(layer)]["in_scale"]
            st.out_scale = meta["layers"][str(layer)]["out_scale"]
            for key in ("log_l1_mult", "l0_integral", "l0_start"):
                setattr(st, key, meta["layers"][str(layer)].get(key, 0.0))
        return True

    # --------------------------------------------------------------------- run
    def run(self, progress: bool = True) -> list[Path]:
        for layer in self.owned:
            self.states[layer] = self._new_state(layer)
        resumed = self.load_checkpoint()
        progress = progress and self.group.main
        desc = f"train L{layer_ranges(self.layers)}"
        if self.group.distributed:
            desc += f" ({self.group.world} ranks{', layers distributed' if self.owners else ''})"
        bar = tqdm(total=self.total_steps * self.cfg.batch_size, initial=self.step * self.cfg.batch_size,
                   unit="tok", unit_scale=True, disable=not progress, desc=desc, dynamic_ncols=True, mininterval=1.0)
        self.source.on_harvest = _harvest_reporter(bar, desc) if progress else None
        batches = self.source.batches(self.cfg.batch_size, self.chunk, self.batch, remaining=self.total_steps - self.step)
        if not resumed:
            c, b, first = next(batches)
            self.init_from_data(first)
            batches = _chain_first((c, b, first), batches)
        log = open(self.out / TRAIN_LOG_FILE, "a") if self.group.main else None
        t_last = time.time()
        try:
            while self.step < self.total_steps:
                c, b, pairs = next(batches)
                lr = lr_at(self.step, self.total_steps, self.cfg)
                l1 = l1_at(self.step, self.total_steps, self.cfg)
                stats = {}
                if self.cfg.kind == "clt":  # one joint step: each layer's output is read from every layer below
                    stats = clt_step(self.states, pairs, lr, l1, self.cfg)
                for layer, st in self.states.items():
                    if self.cfg.kind != "clt":
                        x, y = st.dictionary.cfg.pick(*pairs[layer])
                        stats[layer] = st.step(x[self.part], y[self.part], lr, l1, self.cfg)
                    if self.step >= int(self.cfg.l1_warmup * self.total_steps):
                        st.steer_l1(stats[layer]["l0"], self.cfg, self.step / self.total_steps)
                self.step += 1
                # the position of the *next* batch, which is where a resume must start
                self.chunk, self.batch = c, b + 1
                bar.update(self.cfg.batch_size)
                if self.step % 10 == 0 or self.step == self.total_steps:
                    mean = {k: sum(s[k] for s in stats.values()) / len(stats) for k in ("l0", "fvu", "dead")}
                    bar.set_postfix(L0=f"{mean['l0']:.1f}", FVU=f"{mean['fvu']:.3f}", dead=f"{mean['dead']:.1%}", refresh=False)
                if self.step % 50 == 0 or self.step == self.total_steps:
                    if self.owners is not None:  # every rank's layers, in the one log rank 0 writes
                        parts = self.group.gather_objects(stats)
                        stats = {k: v for p in parts for k, v in p.items()} if parts else stats
                    now = time.time()
                    if log is not None:
                        log.write(json.dumps({"step": self.step, "lr": lr, "l1": l1, "sec": round(now - t_last, 3),
                                              "layers": {str(k): stats[k] for k in sorted(stats)}}) + "\n")
                        log.flush()
                    t_last = now
                if self.step % self.cfg.checkpoint_every == 0 and self.step < self.total_steps:
                    self.save_checkpoint()
        finally:
            bar.close()
            if log is not None:
                log.close()
        return self.finish()

    def finish(self) -> list[Path]:
        """Fold the normalisation into the weights and write each run folder's config + weights (rank 0)."""
        gathered = self._gathered_states()
        if gathered is not None:
            self.save_checkpoint(gathered)  # so a kill during the final writes still resumes to the same result
            tensors, layers = gathered
            for layer in self.layers:
                d = Dictionary(self.dictionary_config(layer), device="cpu")
                d.load_state_dict({k.split("/", 2)[2]: v for k, v in tensors.items() if k.startswith(f"{layer}/dict/")})
                out_scale: float | torch.Tensor = layers[str(layer)]["out_scale"]
                if d.cfg.kind == "clt":  # each target block in its own layer's units
                    out_scale = clt_out_scale(d.cfg.targets, {int(m): v["out_scale"] for m, v in layers.items()},
                                              d.cfg.d_in)
                d.fold_scales(layers[str(layer)]["in_scale"], out_scale)
                save_dictionary(d, self.run_dir(layer))
            (self.out / CHECKPOINT_FILE).unlink(missing_ok=True)
        self.group.barrier()
        return [self.run_dir(layer) for layer in self.layers]


CHUNK_BUDGET = 6 << 30  # bytes of float32 (input, target) pairs held per shuffle buffer


def chunk_tokens(cfg: TrainConfig, n_layers: int, d_model: int) -> int:
    """Tokens per shuffle buffer: ``--chunk-tokens``, capped so that every layer's pairs fit ``CHUNK_BUDGET`` (a
    30-layer set at the default 131k tokens would need 18 GB). A pure function of the settings, so resume agrees."""
    return max(cfg.ctx_len, min(cfg.chunk_tokens, CHUNK_BUDGET // (n_layers * 2 * d_model * 4)))


def layer_owners(layers: list[int], group: Group, distribute: bool) -> dict[int, int] | None:
    """--distribute-layers under torchrun: layer -> rank, round robin (neighbouring layers, of similar cost, on
    different ranks). None otherwise: every rank holds every layer."""
    if not (distribute and group.distributed):
        return None
    return {layer: i % group.world for i, layer in enumerate(layers)}


def read_checkpoint_state(path: Path) -> dict:
    """The checkpoint's JSON state (step, data position, scales); a one-line error if the file is damaged."""
    try:
        with safe_open(str(path), "pt") as f:
            return json.loads(f.metadata()["state"])
    except (SafetensorError, OSError, KeyError, ValueError, RuntimeError, TypeError) as e:
        raise _corrupt(path, e) from None


def _corrupt(path: Path, e: Exception) -> CheckpointError:
    return CheckpointError(f"{path} is corrupt ({str(e).splitlines()[0]}): delete it to restart the run from scratch")


def layer_ranges(layers: list[int]) -> str:
    """[0, 1, 2, 3, 8, 10, 11] -> "0-3,8,10-11"."""
    parts, start = [], None
    for i, L in enumerate(layers):
        if start is None:
            start = L
        if i + 1 == len(layers) or layers[i + 1] != L + 1:
            parts.append(str(start) if start == L else f"{start}-{L}")
            start = None
    return ",".join(parts)


def _harvest_reporter(bar, desc: str):
    """Show the model pass that fills the next chunk in the bar's label, so progress never stalls silently."""

    def report(done: int, total: int) -> None:
        bar.set_description_str(f"{desc} (model pass {done / total:.0%})" if done < total else desc, refresh=False)
        bar.refresh()

    return report


def _chain_first(first, rest):
    yield first
    yield from rest


# ------------------------------------------------------------------ entry point
def check_out(cfg: TrainConfig, *, overwrite: bool) -> None:
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise RunExistsError(f"{out} already exists: pass --resume {out} to continue it, --overwrite to replace it, or "
                             "choose another --out")


def prepare_out(cfg: TrainConfig, *, overwrite: bool) -> Path:
    out = Path(cfg.out)
    check_out(cfg, overwrite=overwrite)
    if out.exists() and any(out.iterdir()):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / TRAIN_CONFIG_FILE, cfg.to_dict())
    return out


def read_train_config(out: Path) -> TrainConfig:
    path = Path(out) / TRAIN_CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{out} is not a training run (no {TRAIN_CONFIG_FILE}): start one with "
                              f"`transcoders train --out {out}`")
    try:
        return TrainConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as e:
        raise CheckpointError(f"{path} is corrupt ({e}): start the run again with --overwrite") from None


def train(cfg: TrainConfig, *, overwrite: bool = False, resume: bool = False, progress: bool = True,
          lm: LoadedModel | None = None) -> list[Path]:
    """Train per ``cfg``; returns the run folders written. ``resume`` continues ``cfg.out``."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    group, device = Group.from_env(cfg.device)  # torchrun: this rank's place; else one process
    progress = progress and group.main
    if group.distributed:
        _check_distributed(cfg, group)  # before anything is written
    out = Path(cfg.out)
    if resume:
        if R.finished_runs(out):
            if group.main:
                print(f"{out} is already finished; nothing to resume")
            return R.finished_runs(out)
        if R.in_training(out):
            read_checkpoint_state(out / CHECKPOINT_FILE)  # fail before loading the model and the corpus
    else:
        _on_main(group, lambda: check_out(cfg, overwrite=overwrite))  # fail before loading anything
    if lm is None:  # read the layer count from the config, then build only the blocks up to the last one trained
        layers = parse_layers(cfg.layers, model_layer_count(cfg.model))
        lm = load_model(cfg.model, dtype=cfg.torch_dtype(device), device=device, n_layers=max(layers) + 1)
    layers = parse_layers(cfg.layers, lm.adapter.n_layers)  # the same list: "all" of a truncated model is all trained
    for layer in layers:
        lm.adapter.check_layer(layer)
    if lm.tokenizer is None:
        raise ModelError(f"model {cfg.model!r} has no tokenizer: add tokenizer files to the folder")
    if group.distributed and cfg.distribute_layers and group.world > len(layers):
        raise TranscodersError(f"--distribute-layers puts each layer on one rank, but there are {len(layers)} "
                               f"layer(s) for {group.world} ranks: train more layers or start fewer processes")
    n_ctx = math.ceil(cfg.tokens * 1.1 / cfg.ctx_len) + 8
    if progress:
        print(f"transcoders: reading corpus {cfg.corpus!r} into {n_ctx:,} contexts of {cfg.ctx_len} tokens...", file=sys.stderr)
    contexts = _on_main(group, lambda: load_split(cfg.corpus, lm.tokenizer, "train", ctx_len=cfg.ctx_len,
                                                  max_tokens=n_ctx * cfg.ctx_len, text_column=cfg.text_column,
                                                  seed=cfg.seed), then_all=True)
    if not resume:  # everything is checked: only now is a run folder created (or an old one replaced)
        out = _on_main(group, lambda: prepare_out(cfg, overwrite=overwrite))
    chunk = chunk_tokens(cfg, len(layers), lm.adapter.d_model)
    if cfg.kind == "clt":
        check_clt_memory(cfg.dictionary_width(lm.adapter.d_model), lm.adapter.d_model, len(layers),
                         device_memory(device), reserved=chunk * len(layers) * 2 * lm.adapter.d_model * 4 + (1 << 30))
    if chunk < cfg.chunk_tokens and progress:
        print(f"transcoders: {len(layers)} layers: shuffle buffer of {chunk:,} tokens (not {cfg.chunk_tokens:,}) "
              f"to keep it under {CHUNK_BUDGET >> 30} GiB", file=sys.stderr)
    owners = layer_owners(layers, group, cfg.distribute_layers)
    source = ActivationSource(lm, contexts, layers, chunk_contexts=max(1, chunk // cfg.ctx_len),
                              forward_batch=cfg.forward_batch, seed=cfg.seed, cache_dir=cfg.cache_activations or None,
                              group=group, owners=owners)
    return Trainer(cfg, lm, source, layers, out, group=group, device=device).run(progress=progress)


def device_memory(device: str) -> int:
    """Bytes of memory a run may plan on: the GPU's, or 85% of this machine's RAM (the rest: the OS, Python)."""
    if str(device).startswith("cuda"):
        return int(torch.cuda.get_device_properties(torch.device(device)).total_memory)
    return int(0.85 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _on_main(group: Group, fn, then_all: bool = False):
    """``fn()`` on rank 0 first (creating folders, filling caches), its error re-raised on every rank so that none
    waits forever; with ``then_all`` the other ranks then call ``fn`` themselves (reading what rank 0 made)."""
    if not group.distributed:
        return fn()
    result, err = None, None
    if group.main:
        try:
            result = fn()
        except TranscodersError as e:
            err = e
    message = group.broadcast_object(None if err is None else str(err))
    if err is not None:
        raise err
    if message is not None:
        raise TranscodersError(f"{message} (rank 0)")
    if then_all:
        return result if group.main else fn()
    return group.broadcast_object(result)


def _check_distributed(cfg: TrainConfig, group: Group) -> None:
    if cfg.kind == "clt":
        raise TranscodersError("a cross-layer transcoder trains in one process for now: run it without torchrun")
    if cfg.cache_activations:
        raise TranscodersError("--cache-activations does not work under torchrun yet: drop it (each rank harvests its "
                               "share of every chunk, so the model pass is already divided between the ranks)")
    if not cfg.distribute_layers and cfg.batch_size % group.world:
        raise TranscodersError(f"--batch-size {cfg.batch_size} does not split evenly over {group.world} ranks: use a "
                               f"multiple of {group.world} (it is the global batch; each rank takes an equal slice)")
