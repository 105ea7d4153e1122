"""lhotse integration: the ``"cpc"`` FeatureExtractor, and CutSet / RecordingSet manifests as
inputs to ``cpcspeech extract``.

lhotse is an optional extra (``pip install 'cpcspeech[lhotse]'``). This module imports it at the
top (the extractor subclasses lhotse's base class), so extract.py imports this module lazily.
"""

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from lhotse import CutSet, RecordingSet, load_manifest
from lhotse.features.base import FeatureExtractor, register_extractor
from lhotse.utils import compute_num_frames_from_samples

from cpcspeech.errors import AudioError, ConfigError, CPCSpeechError
from cpcspeech.io.audio import AudioInfo, resampled_length, to_mono
from cpcspeech.model.cpc import CPCModel

EXTRACTOR_NAME = "cpc"
"""The name the extractor is registered under; lhotse Features manifests carry it as ``type``."""

FRAME_TOLERANCE = 2
"""Most frames our count may differ from lhotse's before :func:`match_lhotse_frames` refuses."""

MANIFEST_SUFFIXES = (".jsonl.gz", ".jsonl")


def match_lhotse_frames(
    feats: np.ndarray, num_samples: int, sampling_rate: int, frame_shift: float
) -> np.ndarray:
    """Give features lhotse's frame count, the one place the two counting rules meet.

    CPCModel gives ``(N + 1) // 160`` frames for N samples at 16 kHz (frame t covers samples
    [160 t, 160 t + 160)). lhotse expects ``compute_num_frames``: ``(n + hop // 2) // hop`` for n
    samples at the recording's rate, hop = frame_shift * rate, i.e. ``(N + 80) // 160`` at 16 kHz:
    one frame more when the last partial frame holds 80 to 158 samples. The missing frame is the
    last frame repeated (edge padding), so every real frame stays exactly what
    ``CPCModel.extract`` gives; surplus frames are cut from the end.

    Args:
        feats: (T, D) features of the whole signal.
        num_samples: samples at ``sampling_rate`` (the recording's rate, before resampling).

    Returns:
        (T', D) with T' = lhotse.utils.compute_num_frames_from_samples(num_samples, ...).

    Raises:
        CPCSpeechError: T and T' differ by more than FRAME_TOLERANCE, or T = 0 < T'.
    """
    target = compute_num_frames_from_samples(num_samples, frame_shift, sampling_rate)
    found = feats.shape[0]
    if abs(found - target) > FRAME_TOLERANCE or (found == 0 and target > 0):
        raise CPCSpeechError(
            f"lhotse expects {target} frames for {num_samples} samples at {sampling_rate} Hz "
            f"(frame shift {frame_shift} s), found {found}; more than {FRAME_TOLERANCE} apart"
        )
    if found >= target:
        return feats[:target]
    pad = np.repeat(feats[-1:], target - found, axis=0)  # (target - found, D)
    return np.concatenate([feats, pad], axis=0)


@dataclass
class CPCFeatureConfig:
    """Settings of the ``"cpc"`` extractor (lhotse stores them in its manifests)."""

    model: str = "default"  # any CPCModel.from_pretrained spec
    layer: str = "c"  # "c" (D = 256 for the shipped weights) or "z" (D = 512)
    precision: str = "fp32"  # or "bf16" (see CPCModel.extract)
    chunk_seconds: float = 20.0  # audio per forward chunk; bounds memory, same features
    device: str = "cpu"  # "cpu" or "cuda[:N]"

    def to_dict(self) -> dict:
        """What lhotse stores (FeatureExtractor.to_dict, to_yaml)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "CPCFeatureConfig":
        """What lhotse reads back (FeatureExtractor.from_dict); unknown keys are errors."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"cpc extractor config: expected keys among {sorted(known)}, found {unknown}"
            )
        return cls(**data)

    def __post_init__(self) -> None:
        if self.layer not in ("c", "z"):
            raise ConfigError(f"cpc extractor layer: expected 'c' or 'z', found {self.layer!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(
                f"cpc extractor precision: expected 'fp32' or 'bf16', found {self.precision!r}"
            )
        if not float(self.chunk_seconds) > 0:
            raise ConfigError(
                f"cpc extractor chunk_seconds: expected > 0, found {self.chunk_seconds}"
            )


@register_extractor
class CPCFeatureExtractor(FeatureExtractor):
    """CPC features (c_t or z_t) for lhotse, one frame per 10 ms.

    Audio at any rate is mixed to mono and resampled to 16 kHz (as ``load_audio`` does), run
    through ``CPCModel.extract`` and given lhotse's frame count by :func:`match_lhotse_frames`.
    The sampling rate must make 10 ms a whole number of samples (any multiple of 100 Hz), as for
    lhotse's own extractors.
    """

    name = EXTRACTOR_NAME
    config_type = CPCFeatureConfig

    def __init__(self, config: CPCFeatureConfig | None = None) -> None:
        super().__init__(config)
        model = CPCModel.from_pretrained(self.config.model)
        self.model = model.eval().to(torch.device(self.config.device))

    @property
    def frame_shift(self) -> float:
        """Seconds between frames: 160 / 16000 = 0.01 for the paper's strides."""
        return self.model.frame_shift / self.model.sample_rate

    def feature_dim(self, sampling_rate: int) -> int:
        return self.model.c_dim if self.config.layer == "c" else self.model.z_dim

    @property
    def device(self) -> str:
        return self.config.device

    def extract(self, samples: "np.ndarray | torch.Tensor", sampling_rate: int) -> np.ndarray:
        """samples: (N,) or (channels, N) at ``sampling_rate`` -> (T', D) float32, T' as lhotse
        counts frames (see :func:`match_lhotse_frames`)."""
        if isinstance(samples, torch.Tensor):
            samples = samples.cpu().numpy()
        data = np.asarray(samples, dtype=np.float32)
        data = data[None, :] if data.ndim == 1 else data  # (channels, N)
        wav = to_mono("lhotse samples", data.T, sampling_rate, self.model.sample_rate, 1)
        with torch.inference_mode():
            feats = self.model.extract(
                torch.from_numpy(wav),
                layer=self.config.layer,
                chunk_seconds=self.config.chunk_seconds,
                precision=self.config.precision,
            )  # (T, D), T = (N16 + 1) // 160
        feats = feats.to("cpu", torch.float32).numpy()
        return match_lhotse_frames(feats, data.shape[1], sampling_rate, self.frame_shift)


# ----- manifests as extract inputs -----


def is_manifest(path: Path) -> bool:
    return path.name.lower().endswith(MANIFEST_SUFFIXES)


@dataclass(frozen=True, eq=False)
class LhotseAudio:
    """The audio of one cut or recording of a lhotse manifest, read by lhotse."""

    manifest: str
    item: object  # a lhotse Cut or Recording

    @property
    def label(self) -> str:
        return f"{self.manifest}#{self.item.id}"

    def info(self, sample_rate: int, min_samples: int) -> AudioInfo:
        """Length from the manifest (no audio read)."""
        rate, count = int(self.item.sampling_rate), int(self.item.num_samples)
        num_samples = resampled_length(count, rate, sample_rate)
        if num_samples < min_samples:
            raise AudioError(
                self.label,
                f"too short: {num_samples} samples at {sample_rate} Hz, need at least "
                f"{min_samples} for one frame",
            )
        return AudioInfo(self.label, rate, count, int(self.item.num_channels), num_samples)

    def load(self, sample_rate: int, min_samples: int) -> np.ndarray:
        """Returns wav: (N,) float32 mono at ``sample_rate``."""
        try:
            samples = self.item.load_audio()  # (channels, n) float32 at the item's rate
        except Exception as err:  # lhotse raises many types for missing or unreadable audio
            raise AudioError(self.label, f"lhotse could not load the audio ({err})") from err
        data = np.asarray(samples, dtype=np.float32).T  # (n, channels)
        return to_mono(self.label, data, int(self.item.sampling_rate), sample_rate, min_samples)


def manifest_inputs(path: str | os.PathLike) -> list[tuple[str, LhotseAudio]]:
    """A CutSet or RecordingSet manifest -> (cut or recording id, its audio), in manifest order."""
    path = Path(path)
    try:
        manifest = load_manifest(path)
    except Exception as err:
        raise CPCSpeechError(
            f"{path}: expected a lhotse CutSet or RecordingSet manifest, lhotse could not read "
            f"it ({err})"
        ) from err
    if not isinstance(manifest, CutSet | RecordingSet):
        raise CPCSpeechError(
            f"{path}: expected a lhotse CutSet or RecordingSet manifest, found a "
            f"{type(manifest).__name__}"
        )
    items = []
    for item in manifest:
        if "/" in item.id or "\\" in item.id or item.id in (".", ".."):
            raise CPCSpeechError(f"{path}: id {item.id!r} must not contain a path separator")
        if isinstance(manifest, CutSet) and not item.has_recording:
            raise CPCSpeechError(f"{path}: cut {item.id!r} expected to have audio, found none")
        items.append((item.id, LhotseAudio(str(path), item)))
    if not items:
        raise CPCSpeechError(f"{path}: expected at least one cut or recording, found none")
    return items
