"""Small random features + item file (3 speakers, 3 phones, 2 contexts) for a richer reference."""

import sys
from pathlib import Path

import numpy as np

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(13)
lines = ["#file onset offset #phone prev-phone next-phone speaker"]
centres = {"a": rng.normal(size=4), "b": rng.normal(size=4), "c": rng.normal(size=4)}
for u in range(6):
    spk = f"s{u % 3}"
    t = 0
    frames = []
    for k in range(8):
        phone = "abc"[(u + k) % 3]
        ctx = ("x", "y") if k % 2 else ("y", "x")
        n = int(rng.integers(3, 7))
        frames.append(centres[phone] + 0.9 * rng.normal(size=(n, 4)) + 0.3 * (u % 3))
        lines.append(f"u{u} {t / 100:.2f} {(t + n) / 100:.2f} {phone} {ctx[0]} {ctx[1]} {spk}")
        t += n
    np.save(out / f"u{u}.npy", np.concatenate(frames).astype(np.float32))
(out / "random.item").write_text("\n".join(lines) + "\n")
