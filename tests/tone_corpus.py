"""A tiny Kaldi data dir of tone "phones" for the ABX and units tests (not collected by pytest)."""

from pathlib import Path

import numpy as np
import soundfile as sf

from cpcspeech.io.alignments import CANONICAL_INDEX, label_frames


def tone_corpus(root: Path) -> Path:
    """Kaldi dir: 2 speakers x 3 utterances of tone 'phones' with CPC-format labels."""
    rng = np.random.default_rng(0)
    tones = {"AA": 400.0, "S": 3000.0, "M": 1200.0}
    wav_scp, utt2spk, label_lines = [], [], []
    (root / "wavs").mkdir(parents=True)
    for speaker, hum in (("spk_a", 90.0), ("spk_b", 170.0)):
        for k in range(3):
            utt = f"{speaker}-{k}"
            phones = ["SIL"] + [str(p) for p in rng.choice(list(tones), size=8)] + ["SIL"]
            owner = np.repeat(np.arange(len(phones)), rng.integers(5, 9, len(phones)) * 160)
            t = np.arange(owner.size) / 16000.0
            wav = 0.05 * np.sin(2 * np.pi * hum * t) + 0.002 * rng.standard_normal(t.size)
            for i, phone in enumerate(phones):
                if phone in tones:
                    wav[owner == i] += 0.5 * np.sin(2 * np.pi * tones[phone] * t[owner == i])
            centres = 160 * np.arange(label_frames(owner.size)) + 200
            labels = [CANONICAL_INDEX[phones[owner[c]]] for c in centres]
            sf.write(root / "wavs" / f"{utt}.wav", wav.astype(np.float32), 16000)
            wav_scp.append(f"{utt} wavs/{utt}.wav")
            utt2spk.append(f"{utt} {speaker}")
            label_lines.append(f"{utt} " + " ".join(map(str, labels)))
    for name, lines in (
        ("phones.txt", [f"{p} {i}" for i, p in enumerate(CANONICAL_INDEX)]),
        ("wav.scp", wav_scp),
        ("utt2spk", utt2spk),
        ("labels.txt", label_lines),
    ):
        (root / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root
