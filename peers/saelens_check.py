"""Runs inside the SAELens environment (peers/envs.py): load exported folders with SAELens itself and report.

    python saelens_check.py REQUEST.json REPLY.json

REQUEST: {"folders": [...], "inputs": "x.safetensors" (tensor "x" [N, d_in]), "outputs": "out.safetensors"}.
For each folder: ``SAE.load_from_disk``, then its codes ``encode(x)`` and output ``sae(x)`` (written to "outputs" as
"{i}.codes" / "{i}.out"), the class SAELens chose, its metadata and any warning raised while loading.
"""

import json
import sys
import warnings
from importlib.metadata import version

import torch
from sae_lens import SAE
from safetensors.torch import load_file, save_file

request = json.load(open(sys.argv[1]))
x = load_file(request["inputs"])["x"]
tensors, cases = {}, []
for i, folder in enumerate(request["folders"]):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sae = SAE.load_from_disk(folder)
    sae.eval()
    with torch.no_grad():
        tensors[f"{i}.codes"] = sae.encode(x).contiguous()
        tensors[f"{i}.out"] = sae(x).contiguous()
    meta = {k: v for k, v in sae.cfg.metadata.to_dict().items() if isinstance(v, (str, int, float, bool, type(None)))}
    cases.append({"class": type(sae).__name__, "architecture": sae.cfg.architecture(), "metadata": meta,
                  "d_in": sae.cfg.d_in, "d_sae": sae.cfg.d_sae, "warnings": [str(w.message) for w in caught]})
save_file(tensors, request["outputs"])
json.dump({"cases": cases, "sae_lens": version("sae-lens"), "torch": torch.__version__}, open(sys.argv[2], "w"))
