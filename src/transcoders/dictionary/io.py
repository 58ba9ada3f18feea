"""Save and load dictionaries: ``config.json`` + ``weights.safetensors`` in a run folder."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from ..errors import CheckpointError
from ..paths import atomic_write_bytes, atomic_write_json
from .module import Dictionary, DictionaryConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"


def state_tensors(d: Dictionary) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in d.state_dict().items()}


def save_dictionary(d: Dictionary, run_dir: str | Path) -> None:
    """Write weights first, then the config, each atomically: a folder with a config always has its weights."""
    run_dir = Path(run_dir)
    atomic_write_bytes(run_dir / WEIGHTS_FILE, save(state_tensors(d), metadata={"format": "transcoders-v1"}))
    atomic_write_json(run_dir / CONFIG_FILE, d.cfg.to_dict())


def read_config(run_dir: str | Path) -> DictionaryConfig:
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is not a run folder: it does not exist (train one with "
                              f"`transcoders train --out {run_dir}`)")
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not a finished run: it has no {CONFIG_FILE} (resume it with "
                              f"`transcoders train --resume {run_dir}`)")
    try:
        return DictionaryConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path} is corrupt ({e}): retrain or restore the run folder") from None


def load_dictionary(
    run_dir: str | Path,
    *,
    expect_model: str | None = None,
    expect_layer: int | None = None,
    expect_width: int | None = None,
    device: str = "cpu",
) -> Dictionary:
    """Load a run folder's dictionary; outputs are bit-identical to the saved module's.

    ``expect_*`` guard against using a dictionary made for another model, layer or width.
    """
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    if expect_model is not None and cfg.model != expect_model:
        raise CheckpointError(f"{run_dir} was trained on model {cfg.model!r}, not {expect_model!r}: pass --model {cfg.model}")
    if expect_layer is not None and cfg.layer != expect_layer:
        raise CheckpointError(f"{run_dir} was trained on layer {cfg.layer}, not layer {expect_layer}")
    if expect_width is not None and cfg.width != expect_width:
        raise CheckpointError(f"{run_dir} has width {cfg.width}, not {expect_width}")
    path = run_dir / WEIGHTS_FILE
    try:
        tensors = load_file(str(path), device=device)
    except FileNotFoundError:
        raise CheckpointError(f"{run_dir} has no {WEIGHTS_FILE}: the run is incomplete; resume or retrain it") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} is corrupt ({str(e).splitlines()[0]}): retrain or restore the run folder") from None
    d = Dictionary(cfg, device=device, dtype=next(iter(tensors.values())).dtype if tensors else torch.float32)
    expected = {k: tuple(v.shape) for k, v in d.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != got:
        diff = sorted(set(expected.items()) ^ set(got.items()))[:3]
        raise CheckpointError(f"{path} does not match its {CONFIG_FILE} (width/d_in/d_out/kind differ: {diff}): the files "
                              "come from different runs")
    d.load_state_dict(tensors)
    return d
