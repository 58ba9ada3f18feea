"""A transcoder set: one transcoder per MLP layer of one model, loaded as a unit.

``transcoders train --layers all --out DIR`` writes one (``DIR/layer_NN/`` run folders). A set may also cover only
some layers: circuits then treat the MLPs without a transcoder as frozen error terms (their whole output is an
error node), which is exact but explains less.
"""

from __future__ import annotations

from pathlib import Path

from ..dictionary import Dictionary, load_dictionary, read_config
from ..dictionary import runs as R
from ..errors import CircuitError


class TranscoderSet:
    """``{layer: transcoder}`` for one model; every member reads ``blocks.L.mlp.in`` and imitates ``blocks.L.mlp.out``."""

    def __init__(self, transcoders: dict[int, Dictionary], *, model: str, path: Path | None = None):
        if not transcoders:
            raise CircuitError("a transcoder set needs at least one transcoder")
        for layer, tc in transcoders.items():
            cfg = tc.cfg
            if cfg.kind not in ("transcoder", "skip-transcoder"):
                raise CircuitError(
                    f"layer {layer} holds a {cfg.kind}, not a transcoder: circuits need transcoders "
                    "(train them with `transcoders train --layers all --kind transcoder`)"
                )
            if (cfg.hook_in, cfg.hook_out) != (f"blocks.{layer}.mlp.in", f"blocks.{layer}.mlp.out"):
                raise CircuitError(
                    f"layer {layer}'s transcoder maps {cfg.hook_in} -> {cfg.hook_out}; circuits need "
                    f"blocks.{layer}.mlp.in -> blocks.{layer}.mlp.out"
                )
        self.transcoders = dict(sorted(transcoders.items()))
        self.model = model
        self.path = path

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu") -> TranscoderSet:
        """A set folder (``layer_NN/`` run folders inside) or a single run folder."""
        path = Path(path)
        if not path.is_dir():
            raise CircuitError(f"{path} does not exist: train a set with `transcoders train --layers all --out {path}`")
        runs = [path] if R.is_run(path) else R.layer_runs(path)
        if not runs:
            raise CircuitError(f"{path} holds no finished transcoders (neither a run nor a set of layer runs): train "
                               f"a set with `transcoders train --layers all --out {path}`")
        configs = {run: read_config(run) for run in runs}
        models = {cfg.model for cfg in configs.values()}
        if len(models) > 1:
            raise CircuitError(f"{path} mixes transcoders of different models ({', '.join(sorted(models))}): use one model's set")
        transcoders: dict[int, Dictionary] = {}
        for run, cfg in configs.items():
            if cfg.layer in transcoders:
                raise CircuitError(f"{path} holds two transcoders for layer {cfg.layer}: keep one")
            transcoders[cfg.layer] = load_dictionary(run, device=device).eval()
        for tc in transcoders.values():
            tc.requires_grad_(False)
        return cls(transcoders, model=models.pop(), path=path)

    @property
    def layers(self) -> list[int]:
        return list(self.transcoders)

    def __contains__(self, layer: int) -> bool:
        return layer in self.transcoders

    def __getitem__(self, layer: int) -> Dictionary:
        return self.transcoders[layer]

    def get(self, layer: int) -> Dictionary | None:
        return self.transcoders.get(layer)

    def check_model(self, n_layers: int, d_model: int) -> None:
        for layer, tc in self.transcoders.items():
            if not 0 <= layer < n_layers:
                raise CircuitError(f"the set has a transcoder for layer {layer}, but the model has layers 0-{n_layers - 1}")
            if (tc.cfg.d_in, tc.cfg.d_out) != (d_model, d_model):
                raise CircuitError(
                    f"layer {layer}'s transcoder is {tc.cfg.d_in} -> {tc.cfg.d_out} wide but the model's d_model is "
                    f"{d_model}: the set was trained for another model"
                )

    def __repr__(self) -> str:
        return f"TranscoderSet(model={self.model!r}, layers={self.layers})"
