"""Golden features: the shipped default weights must keep giving the stored outputs.

An accidental change to the model code (layer order, padding, norm, GRU) changes these numbers.
Regenerate only on purpose, after replacing the weights: `python tests/test_golden.py`.
"""

import numpy as np
import torch
from paths import TESTS_DATA

from cpcspeech import load_model

GOLDEN = TESTS_DATA / "golden_default.npz"


def golden_input() -> np.ndarray:
    """1.3 s of a deterministic test signal (two tones and a chirp), no RNG involved."""
    t = np.arange(20800, dtype=np.float64) / 16000
    wav = 0.1 * np.sin(2 * np.pi * 220 * t) + 0.05 * np.sin(2 * np.pi * 1250 * t)
    wav += 0.03 * np.sin(2 * np.pi * (300 + 1500 * t) * t)
    return wav.astype(np.float32)


def golden_features() -> dict[str, np.ndarray]:
    model, _ = load_model("default")  # in eval mode
    wav = golden_input()
    with torch.no_grad():
        c = model.extract(wav, layer="c").numpy()  # (130, 256)
        z = model.extract(wav, layer="z").numpy()  # (130, 512)
    return {"c": c[::8], "z": z[::8], "num_frames": np.array(c.shape[0])}


def test_shipped_weights_give_the_stored_features():
    expected = np.load(GOLDEN)
    found = golden_features()
    assert int(found["num_frames"]) == int(expected["num_frames"]) == (20800 + 1) // 160
    for key in ("c", "z"):
        np.testing.assert_allclose(found[key], expected[key], rtol=1e-4, atol=1e-5, err_msg=key)


if __name__ == "__main__":
    np.savez(GOLDEN, **golden_features())
    print(f"wrote {GOLDEN}")
