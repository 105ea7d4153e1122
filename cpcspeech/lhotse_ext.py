"""lhotse integration: the ``"cpc"`` FeatureExtractor (CutSet / RecordingSet manifests as
audio sources live in ``cpcspeech.io.lhotse``).

lhotse is an optional extra (``pip install 'cpcspeech[lhotse]'``). This module imports it at the
top (the extractor subclasses lhotse's base class); nothing in the package imports this module.
"""

from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from lhotse.features.base import FeatureExtractor, register_extractor
from lhotse.utils import compute_num_frames_from_samples

from cpcspeech.errors import ConfigError, CPCSpeechError
from cpcspeech.io.audio import to_mono
from cpcspeech.io.lhotse import MANIFEST_SUFFIXES, LhotseAudio, is_manifest, manifest_inputs
from cpcspeech.weights.resolve import load_model

EXTRACTOR_NAME = "cpc"
"""The name the extractor is registered under; lhotse Features manifests carry it as ``type``."""

FRAME_TOLERANCE = 2
"""Most frames our count may differ from lhotse's before :func:`match_lhotse_frames` refuses."""

# manifests as audio sources moved to cpcspeech.io.lhotse; these names stay importable from here
__all__ = [
    "EXTRACTOR_NAME", "FRAME_TOLERANCE", "MANIFEST_SUFFIXES", "CPCFeatureConfig",
    "CPCFeatureExtractor", "LhotseAudio", "is_manifest", "manifest_inputs", "match_lhotse_frames",
]  # fmt: skip


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

    model: str = "default"  # any cpcspeech.load_model spec
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
        model, _ = load_model(self.config.model)
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
