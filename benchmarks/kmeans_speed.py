"""k-means for `cpcspeech units fit`: our torch Lloyd vs scikit-learn's MiniBatchKMeans, timed on
the same frame features, with the mean squared distance to the nearest centroid of each.

Run: python benchmarks/kmeans_speed.py --data DIR [--model default] [--utterances 200]
     [--k 50 100] [--threads 2]
Features of the first N utterances of DIR/train_split.txt are extracted once; then each method
fits every K in turn (seed 0). sklearn is imported before timing, so its import is not counted.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

# Runnable from a clone without installing the package (python benchmarks/kmeans_speed.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cpcspeech.eval.features import extract_frames, load_feature_source  # noqa: E402
from cpcspeech.eval.units import kmeans_sklearn, kmeans_torch, nearest  # noqa: E402
from cpcspeech.io.corpus import find_utterances  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default="default")
    parser.add_argument("--utterances", type=int, default=200)
    parser.add_argument("--k", type=int, nargs="+", default=[50, 100])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import sklearn.cluster  # noqa: F401 - imported before timing

    root = Path(args.data)
    utterances = find_utterances(root, root / "train_split.txt")[: args.utterances]
    source = load_feature_source(args.model)
    started = time.perf_counter()
    x = extract_frames(source, utterances, progress=False).features
    print(f"features: {x.shape} from {len(utterances)} utterances of {source.name} "
          f"in {time.perf_counter() - started:.1f} s; torch threads {args.threads}")  # fmt: skip
    rows = []
    for k in args.k:
        for name, fit in (("torch", kmeans_torch), ("sklearn", kmeans_sklearn)):
            started = time.perf_counter()
            centroids = torch.from_numpy(fit(x, k, 0))
            seconds = time.perf_counter() - started
            points = torch.from_numpy(x)
            error = float(((points - centroids[nearest(points, centroids)]) ** 2).sum(1).mean())
            rows.append({"method": name, "k": k, "seconds": seconds, "mse": error})
            print(f"K={k:4d} {name:8s} {seconds:7.2f} s  mean squared distance {error:.4f}")
    print(json.dumps({"frames": int(x.shape[0]), "dim": int(x.shape[1]), "rows": rows}))


if __name__ == "__main__":
    main()
