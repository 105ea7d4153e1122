"""The MFCC baseline of the CPC paper's Table 1: 13 coefficients + deltas + delta-deltas (39-d),
25 ms windows every 10 ms without padding, so the frames are exactly Kaldi's label frames.
"""

import librosa
import numpy as np

from cpcspeech.io.alignments import label_frames

SAMPLE_RATE = 16000
WINDOW = 400  # 25 ms at 16 kHz; also the FFT size, so frames == 1 + (N - 400) // 160 (Kaldi)
HOP = 160  # 10 ms
NUM_CEPS = 13
NUM_MELS = 40
FMIN = 20.0
DELTA_WIDTH = 5  # Kaldi's add-deltas uses +-2 frames
MFCC_DIM = 3 * NUM_CEPS


def mfcc_features(wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """39-d MFCC + delta + delta-delta of one utterance.

    Choices: Hann window of 400 samples, 400-point FFT, 40 HTK-formula mel bands from 20 Hz to
    Nyquist, log power (dB), DCT-II (ortho) to 13 coefficients including c0, deltas over +-2
    frames ("nearest" edges, as Kaldi). ``center=False``: no padding, so frame t is the 25 ms
    window starting at sample 160 t, exactly a Kaldi label frame.

    Args:
        wav: (N,) float32 samples at 16 kHz.

    Returns:
        (T, 39) float32, T = 1 + (N - 400) // 160 (0 when N < 400).
    """
    wav = np.asarray(wav, dtype=np.float32)
    num_frames = label_frames(wav.shape[0])
    if num_frames == 0:
        return np.zeros((0, MFCC_DIM), dtype=np.float32)
    ceps = librosa.feature.mfcc(
        y=wav,
        sr=sample_rate,
        n_mfcc=NUM_CEPS,
        n_fft=WINDOW,
        hop_length=HOP,
        win_length=WINDOW,
        window="hann",
        center=False,
        n_mels=NUM_MELS,
        fmin=FMIN,
        htk=True,
    )  # (13, T)
    delta = librosa.feature.delta(ceps, width=DELTA_WIDTH, order=1, mode="nearest")
    delta2 = librosa.feature.delta(ceps, width=DELTA_WIDTH, order=2, mode="nearest")
    feats = np.concatenate([ceps, delta, delta2], axis=0).T  # (T, 39)
    return np.ascontiguousarray(feats[:num_frames], dtype=np.float32)
