"""Time-domain augmentation of training windows (Kharitonov et al. 2020, arXiv:2007.00991).

Pitch shift, reverberation with a synthetic room impulse response, band-reject filtering,
additive noise (coloured, other utterances of the corpus, or files from a folder) and time
dropout, in numpy / scipy / soxr (no torchaudio, no sox). Every transform draws from the
``np.random.Generator`` it is given, so a window's augmentation is a pure function of its seed.
All signals are (N,) float32 at the model's sample rate; every transform keeps N.
"""

import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.signal
import soxr

from cpcspeech.config import AugmentConfig
from cpcspeech.errors import ConfigError
from cpcspeech.io.audio import AUDIO_EXTENSIONS, load_audio
from cpcspeech.io.sources import audio_files

_EPS = 1e-10
PITCH_FFT = 512  # 32 ms at 16 kHz: the phase vocoder looks at most 16 ms ahead of a sample
PITCH_HOP = 128


# ----- pitch -----
def _stft(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Centred STFT with a periodic Hann window: (N,) -> (n_fft // 2 + 1, frames) complex."""
    window = scipy.signal.get_window("hann", n_fft)
    padded = np.pad(x, (n_fft // 2, n_fft // 2))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]  # (F, n_fft)
    return np.fft.rfft(frames * window, axis=1).T


def _istft(spec: np.ndarray, n_fft: int, hop: int, length: int) -> np.ndarray:
    """Weighted overlap-add inverse of :func:`_stft`, cut to ``length`` samples."""
    window = scipy.signal.get_window("hann", n_fft)
    frames = np.fft.irfft(spec.T, n=n_fft, axis=1) * window  # (F, n_fft)
    count = frames.shape[0]
    total = n_fft + hop * (count - 1)
    out = np.zeros(total + n_fft)
    norm = np.zeros(total + n_fft)
    group = n_fft // hop  # frames i, i + group, ... do not overlap: add each set in one go
    for first in range(min(group, count)):
        chosen = frames[first::group]  # (F', n_fft)
        start = first * hop
        span = chosen.shape[0] * n_fft
        out[start : start + span] += chosen.reshape(-1)
        norm[start : start + span] += np.tile(window**2, chosen.shape[0])
    out, norm = out[:total], norm[:total]
    out = out / np.maximum(norm, _EPS)
    out = out[n_fft // 2 : n_fft // 2 + length]
    return np.pad(out, (0, max(0, length - out.shape[0])))


def _phase_vocoder(spec: np.ndarray, rate: float, hop: int, n_fft: int) -> np.ndarray:
    """Time-stretch an STFT by 1 / rate (rate < 1 lengthens), keeping each bin's frequency."""
    bins, frames = spec.shape
    steps = np.arange(0.0, frames - 1, rate)  # fractional analysis-frame positions
    index = steps.astype(np.int64)
    alpha = (steps - index)[None, :].astype(np.float32)
    left, right = spec[:, index], spec[:, index + 1]
    magnitude = (1.0 - alpha) * np.abs(left) + alpha * np.abs(right)
    advance = (2.0 * np.pi * hop / n_fft) * np.arange(bins, dtype=np.float32)  # per hop
    delta = np.angle(right) - np.angle(left) - advance[:, None]
    delta -= np.float32(2.0 * np.pi) * np.round(delta / np.float32(2.0 * np.pi))
    increments = advance[:, None] + delta
    phase = np.angle(spec[:, :1]) + np.concatenate(
        [np.zeros((bins, 1), dtype=np.float32), np.cumsum(increments[:, :-1], axis=1)], axis=1
    )
    return magnitude * (np.cos(phase) + 1j * np.sin(phase)).astype(np.complex64)


def pitch_shift(wav: np.ndarray, sample_rate: int, semitones: float) -> np.ndarray:
    """Shift every frequency by 2^(semitones / 12), keeping the duration: (N,) -> (N,).

    A phase vocoder stretches time by the ratio, then soxr resamples back to N samples.
    """
    if semitones == 0.0:
        return wav.astype(np.float32, copy=True)
    ratio = 2.0 ** (semitones / 12.0)
    n = wav.shape[0]
    spec = _stft(wav.astype(np.float32), PITCH_FFT, PITCH_HOP).astype(np.complex64)
    stretched = _phase_vocoder(spec, 1.0 / ratio, PITCH_HOP, PITCH_FFT)
    longer = _istft(stretched, PITCH_FFT, PITCH_HOP, int(round(n * ratio)))
    out = soxr.resample(longer, sample_rate * ratio, sample_rate, quality="HQ")
    out = out[:n] if out.shape[0] >= n else np.pad(out, (0, n - out.shape[0]))
    return out.astype(np.float32)


# ----- reverberation -----
def synthetic_rir(
    sample_rate: int, rt60: float, wet: float, rng: np.random.Generator
) -> np.ndarray:
    """A room impulse response: a unit direct path at sample 0, then a Gaussian tail whose
    energy decays by 60 dB in ``rt60`` seconds, scaled to ``wet`` times the direct energy.

    Returns (L,) float64 with L = rt60 seconds (at least 2 samples).
    """
    length = max(2, int(rt60 * sample_rate))
    t = np.arange(1, length) / sample_rate
    tail = rng.standard_normal(length - 1) * np.exp(-6.9078 * t / rt60)  # amplitude: -60 dB
    tail *= np.sqrt(wet / max(float(np.sum(tail**2)), _EPS))
    return np.concatenate([[1.0], tail])


def reverberate(wav: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Causal convolution with ``rir``, cut to N samples and rescaled to the input's RMS."""
    out = scipy.signal.fftconvolve(wav.astype(np.float64), rir)[: wav.shape[0]]
    return _match_rms(out, wav)


# ----- band reject -----
def band_reject(wav: np.ndarray, sample_rate: int, low_hz: float, high_hz: float) -> np.ndarray:
    """Remove [low_hz, high_hz] with a causal Butterworth band-stop (order 8): (N,) -> (N,).

    Causal, so an augmented past never carries information from later samples.
    """
    nyquist = sample_rate / 2.0
    low = min(max(low_hz / nyquist, 1e-4), 0.98)
    high = min(max(high_hz / nyquist, low + 1e-3), 0.999)
    sos = scipy.signal.butter(8, [low, high], btype="bandstop", output="sos")
    return scipy.signal.sosfilt(sos, wav.astype(np.float64)).astype(np.float32)


# ----- additive noise -----
def colored_noise(num_samples: int, beta: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with power spectrum 1 / f^beta (0 white, 1 pink, 2 brown): (N,) float64."""
    spectrum = np.fft.rfft(rng.standard_normal(num_samples))
    freqs = np.fft.rfftfreq(num_samples)
    freqs[0] = freqs[1] if num_samples > 1 else 1.0
    spectrum *= freqs ** (-beta / 2.0)
    return np.fft.irfft(spectrum, n=num_samples)


def add_noise(wav: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """wav + noise scaled so that 10 log10(P_wav / P_noise) = snr_db (P = mean square).

    A silent signal or silent noise returns the signal unchanged.
    """
    signal_power = float(np.mean(wav.astype(np.float64) ** 2))
    noise_power = float(np.mean(noise.astype(np.float64) ** 2))
    if signal_power < _EPS or noise_power < _EPS:
        return wav.astype(np.float32, copy=True)
    scale = np.sqrt(signal_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return (wav + scale * noise).astype(np.float32)


def fit_length(x: np.ndarray, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``num_samples`` stretch of x, tiled when x is shorter: (num_samples,)."""
    if x.shape[0] == 0:
        return np.zeros(num_samples, dtype=np.float32)
    if x.shape[0] < num_samples:
        x = np.tile(x, num_samples // x.shape[0] + 1)
    start = int(rng.integers(0, x.shape[0] - num_samples + 1))
    return x[start : start + num_samples]


# ----- time dropout -----
def time_dropout(
    wav: np.ndarray, sample_rate: int, max_ms: float, max_spans: int, rng: np.random.Generator
) -> np.ndarray:
    """Zero 1..max_spans spans of up to max_ms each, at random places: (N,) -> (N,)."""
    out = wav.astype(np.float32, copy=True)
    n = out.shape[0]
    longest = max(1, int(max_ms * sample_rate / 1000.0))
    for _ in range(int(rng.integers(1, max_spans + 1))):
        width = int(rng.integers(1, longest + 1))
        start = int(rng.integers(0, max(1, n - width + 1)))
        out[start : start + width] = 0.0
    return out


def _match_rms(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    target = float(np.sqrt(np.mean(reference.astype(np.float64) ** 2)))
    current = float(np.sqrt(np.mean(x**2)))
    if current < _EPS:
        return x.astype(np.float32)
    return (x * (target / current)).astype(np.float32)


# ----- the chain -----
class NoiseFolder:
    """Audio files under a folder (sorted, recursive), decoded at the model's rate on demand.

    Keeps the last few decoded files, so a worker does not decode the same file every window.
    """

    def __init__(self, folder: str | os.PathLike, sample_rate: int, cache_files: int = 8) -> None:
        root = Path(folder)
        if not root.is_dir():
            raise ConfigError(f"augment.noise_dir: expected a folder, found {folder!r}")
        self.files = sorted(audio_files(root))  # the one folder scan of cpcspeech.io.sources
        if not self.files:
            raise ConfigError(
                f"augment.noise_dir: expected audio files "
                f"({', '.join(sorted(AUDIO_EXTENSIONS))}) under {folder}, found none"
            )
        self.sample_rate = sample_rate
        self.cache_files = cache_files
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def draw(self, num_samples: int, rng: np.random.Generator) -> np.ndarray:
        """A random stretch of a random file: (num_samples,) float32."""
        index = int(rng.integers(0, len(self.files)))
        if index not in self._cache:
            self._cache[index] = load_audio(self.files[index], self.sample_rate, min_samples=1)
            if len(self._cache) > self.cache_files:
                self._cache.popitem(last=False)
        self._cache.move_to_end(index)
        return fit_length(self._cache[index], num_samples, rng)


class Augmenter:
    """The configured chain: pitch, reverb, band reject, additive noises, time dropout.

    Args:
        config: the ``augment`` section.
        sample_rate: the model's rate.
        corpus_window: ``draw(rng) -> (N,) float32``, a window of another training utterance,
            for ``corpus_noise_p`` (the trainer passes one that reads from the training corpus).
    """

    def __init__(
        self,
        config: AugmentConfig,
        sample_rate: int,
        corpus_window: Callable[[np.random.Generator], np.ndarray] | None = None,
    ) -> None:
        self.config = config
        self.sample_rate = sample_rate
        self.corpus_window = corpus_window
        self.noise_folder = (
            NoiseFolder(config.noise_dir, sample_rate) if config.folder_noise_p > 0 else None
        )
        if config.corpus_noise_p > 0 and corpus_window is None:
            raise ConfigError("augment.corpus_noise_p > 0 needs a corpus to draw windows from")

    def __call__(self, wav: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(N,) float32 -> (N,) float32; a pure function of (wav, rng's state)."""
        cfg, sr = self.config, self.sample_rate
        n = wav.shape[0]
        out = wav.astype(np.float32, copy=True)
        if rng.random() < cfg.pitch_p:
            out = pitch_shift(out, sr, rng.uniform(-cfg.pitch_semitones, cfg.pitch_semitones))
        if rng.random() < cfg.reverb_p:
            rir = synthetic_rir(
                sr, rng.uniform(*cfg.reverb_rt60), rng.uniform(*cfg.reverb_wet), rng
            )
            out = reverberate(out, rir)
        if rng.random() < cfg.band_reject_p:
            centre = rng.uniform(*cfg.band_reject_hz)
            half = centre * rng.uniform(*cfg.band_reject_width) / 2.0
            out = band_reject(out, sr, centre - half, centre + half)
        if rng.random() < cfg.colored_noise_p:
            noise = colored_noise(n, rng.uniform(*cfg.colored_noise_beta), rng)
            out = add_noise(out, noise, rng.uniform(*cfg.noise_snr_db))
        if rng.random() < cfg.corpus_noise_p and self.corpus_window is not None:
            noise = fit_length(self.corpus_window(rng), n, rng)
            out = add_noise(out, noise, rng.uniform(*cfg.noise_snr_db))
        if rng.random() < cfg.folder_noise_p and self.noise_folder is not None:
            noise = self.noise_folder.draw(n, rng)
            out = add_noise(out, noise, rng.uniform(*cfg.noise_snr_db))
        if rng.random() < cfg.time_dropout_p:
            out = time_dropout(out, sr, cfg.time_dropout_ms, cfg.time_dropout_spans, rng)
        return out


def window_rng(seed: int, epoch: int, batch_index: int, position: int) -> np.random.Generator:
    """The generator of one window's augmentation: a pure function of its place in the plan,
    so an exactly resumed run draws the same augmentations, with any number of workers."""
    return np.random.default_rng([int(seed), int(epoch), int(batch_index), int(position), 0xA06])
