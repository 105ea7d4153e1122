"""Run CPC_audio's own ABX code (cpc/eval/ABX.py + cpc/eval/ABX/, dtw.pyx compiled with Cython)
on its test data and on small random features; print JSON of the scores."""

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch

EVAL = Path("/tmp/cpcaudio/cpc/eval")
sys.path.insert(0, str(EVAL))
# ABX.py imports cpc.dataset / cpc.feature_loader only for its CLI (torchaudio); stub them.
for name in ("cpc", "cpc.dataset", "cpc.feature_loader"):
    sys.modules[name] = types.ModuleType(name)
sys.modules["cpc.dataset"].findAllSeqs = None
sys.modules["cpc.feature_loader"].buildFeature = None
sys.modules["cpc.feature_loader"].FeatureModule = None
sys.modules["cpc.feature_loader"].loadModel = None
if not hasattr(torch.sparse, "FloatTensor"):
    torch.sparse.FloatTensor = lambda i, v, s: torch.sparse_coo_tensor(i, v, s)
    torch.sparse.LongTensor = lambda i, v, s: torch.sparse_coo_tensor(i, v, s)
spec = importlib.util.spec_from_file_location("abx_main", EVAL / "ABX.py")
abx_main = importlib.util.module_from_spec(spec)
spec.loader.exec_module(abx_main)
import ABX.abx_iterators as abx_it  # noqa: E402 - after the stubs above


def feature_function(path):
    data = torch.tensor(np.load(path), dtype=torch.float32)
    if data.dim() == 1:
        data = data.view(-1, 1)
    return data.view(1, data.size(0), data.size(1))


Original = abx_it.ABXFeatureLoader


def run(item, folder, names, distance, normalize, step):
    abx_it.ABXFeatureLoader = lambda p, s, f, st, n: Original(p, s, f, st, normalize)
    seq_list = [(n, str(Path(folder) / f"{n}.npy")) for n in names]
    scores = {}
    for mode in ("within", "across"):
        try:
            scores.update(abx_main.ABX(feature_function, item, seq_list, distance, step, [mode]))
        except RuntimeError as err:  # no triplet of this kind: their sparse tensor build fails
            scores[mode] = None
            print("no", mode, "triplets:", str(err)[:60], file=sys.stderr)
    abx_it.ABXFeatureLoader = Original
    return scores


out = {}
td = EVAL / "ABX" / "test_data"
names = ["2107", "42", "23", "407"]
for item in ("dummy_item_file.item", "dummy_item_within.item"):
    for distance, normalize in (("cosine", True), ("euclidian", False)):
        out[f"{item}:{distance}"] = run(str(td / item), td, names, distance, normalize, 10)
rnd = Path(sys.argv[1])
rnames = sorted(p.stem for p in rnd.glob("*.npy"))
for distance, normalize in (("cosine", True), ("euclidian", False)):
    out[f"random.item:{distance}"] = run(
        str(rnd / "random.item"), rnd, rnames, distance, normalize, 100
    )
print(json.dumps(out, indent=2))
