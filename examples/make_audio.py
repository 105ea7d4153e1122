"""Synthesise the example utterances in examples/audio/ with espeak-ng (needed only to remake them).

Usage: python examples/make_audio.py  (needs the espeak-ng program: apt-get install espeak-ng)
"""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

AUDIO_DIR = Path(__file__).resolve().parent / "audio"
SAMPLE_RATE = 16000

# (relative output path, espeak-ng voice, words per minute, text); one WAV, one in a subfolder.
UTTERANCES = [
    ("hello.flac", "en-us", 150, "Hello, this is a short example of synthetic speech."),
    ("weather.wav", "en-gb", 150, "The weather is cold and windy today."),
    ("more/numbers.flac", "en-us+f3", 150, "One, two, three, four, five."),
    ("more/question.flac", "en-gb+m3", 150, "Could you please open the window?"),
]


def synthesise(text: str, voice: str, speed: int) -> np.ndarray:
    """Run espeak-ng and return (N,) float32 mono at 16 kHz."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "out.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text], check=True
        )
        wav, rate = sf.read(str(raw), dtype="float32", always_2d=True)  # (N, channels)
    wav = wav.mean(axis=1)
    if rate != SAMPLE_RATE:
        wav = soxr.resample(wav, rate, SAMPLE_RATE, quality="HQ")
    peak = float(np.abs(wav).max())
    return (wav * (0.9 / peak if peak > 0 else 1.0)).astype(np.float32)


def main() -> None:
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng not found; install it (e.g. apt-get install espeak-ng) to remake audio")
    for rel, voice, speed, text in UTTERANCES:
        wav = synthesise(text, voice, speed)
        path = AUDIO_DIR / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), wav, SAMPLE_RATE, subtype="PCM_16")
        print(f"{path.relative_to(AUDIO_DIR.parent)}: {len(wav) / SAMPLE_RATE:.2f} s  {text!r}")


if __name__ == "__main__":
    main()
