"""Time-domain augmentation: each transform does what it says, seeded and length-preserving."""

import numpy as np
import pytest
import soundfile as sf
import torch

from cpcspeech.config import AugmentConfig, DataConfig, load_config
from cpcspeech.errors import ConfigError
from cpcspeech.io.corpus import find_utterances
from cpcspeech.train.augment import (
    Augmenter,
    NoiseFolder,
    add_noise,
    band_reject,
    colored_noise,
    pitch_shift,
    reverberate,
    synthetic_rir,
    time_dropout,
    window_rng,
)
from cpcspeech.train.windows import WindowCorpus, WindowSampler, make_augmenter, make_loader

SR = 16000
N = 20480


def peak_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / SR)[np.argmax(spectrum)])


def band_power_db(x: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    return float(10 * np.log10(spectrum[(freqs >= low) & (freqs <= high)].mean()))


@pytest.mark.parametrize("semitones", [3.0, -4.0, 0.5])
def test_pitch_moves_the_spectral_peak_by_the_ratio_and_keeps_the_duration(semitones):
    t = np.arange(N) / SR
    tone = (0.5 * np.sin(2 * np.pi * 500 * t)).astype(np.float32)
    shifted = pitch_shift(tone, SR, semitones)
    assert shifted.shape == tone.shape and shifted.dtype == np.float32
    want = 500 * 2 ** (semitones / 12)
    assert abs(peak_hz(shifted) - want) < 2.0, (peak_hz(shifted), want)  # bins are 0.78 Hz
    # The level stays about the same (no silent or exploding output).
    assert 0.5 < np.std(shifted[2048:-2048]) / np.std(tone) < 1.5


def test_pitch_zero_is_the_identity():
    x = np.random.default_rng(0).standard_normal(N).astype(np.float32)
    np.testing.assert_array_equal(pitch_shift(x, SR, 0.0), x)


def _decay_time(x: np.ndarray, drop_db: float) -> float:
    """Seconds for the Schroeder backward-integrated energy of x to fall by drop_db."""
    energy = np.cumsum((x.astype(np.float64) ** 2)[::-1])[::-1]
    curve = 10 * np.log10(energy / energy[0] + 1e-30)
    return float(np.argmax(curve <= -drop_db) / SR)


@pytest.mark.parametrize("rt60", [0.3, 0.8])
def test_rir_decays_60_db_in_rt60(rt60):
    rir = synthetic_rir(SR, rt60, wet=1.0, rng=np.random.default_rng(1))
    assert rir[0] == 1.0 and len(rir) == int(rt60 * SR)
    tail = rir[1:]
    # Energy decay of the tail: 30 dB in half of rt60 (T30 x 2 = RT60), within 15 %.
    assert abs(2 * _decay_time(tail, 30) - rt60) < 0.15 * rt60
    assert np.sum(tail**2) == pytest.approx(1.0)  # wet = tail energy / direct energy


def test_reverb_lengthens_the_decay():
    t = np.arange(N) / SR
    burst = np.where(t < 0.3, np.sin(2 * np.pi * 300 * t), 0.0).astype(np.float32)
    rng = np.random.default_rng(2)
    short = reverberate(burst, synthetic_rir(SR, 0.2, 1.0, rng))
    long = reverberate(burst, synthetic_rir(SR, 0.8, 1.0, rng))
    end = int(0.3 * SR)  # the burst is over from here
    assert np.abs(burst[end:]).max() == 0.0
    # The time for the sound after the burst's end to fall 20 dB: ~0 dry, grows with rt60
    # (rt60 / 3 for a pure exponential; measured 0.07-0.08 s and 0.17-0.36 s over seeds).
    dry, room, hall = (_decay_time(x[end - 16 :], 20) for x in (burst, short, long))
    assert dry < 0.005 < 0.04 < room < hall / 1.5, (dry, room, hall)
    # Same RMS as the input, and causal: nothing before the burst starts is changed.
    assert np.sqrt(np.mean(long**2)) == pytest.approx(np.sqrt(np.mean(burst**2)), rel=1e-4)


def test_band_reject_removes_the_band_and_keeps_the_rest():
    x = np.random.default_rng(3).standard_normal(4 * N).astype(np.float32)
    y = band_reject(x, SR, 1000.0, 2000.0)
    assert band_power_db(x, 1200, 1800) - band_power_db(y, 1200, 1800) > 35  # measured 40.7
    for low, high in ((100, 500), (4000, 7000)):
        assert abs(band_power_db(x, low, high) - band_power_db(y, low, high)) < 1.0


def test_band_reject_is_causal():
    rng = np.random.default_rng(4)
    x = rng.standard_normal(N).astype(np.float32)
    changed = x.copy()
    changed[12000:] = rng.standard_normal(N - 12000)
    a, b = band_reject(x, SR, 500, 900), band_reject(changed, SR, 500, 900)
    np.testing.assert_array_equal(a[:12000], b[:12000])


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 7.5, 20.0])
def test_added_noise_has_the_asked_snr(snr_db):
    rng = np.random.default_rng(5)
    speech = (0.1 * rng.standard_normal(N)).astype(np.float32)
    noise = colored_noise(N, 1.0, rng)
    mixed = add_noise(speech, noise, snr_db)
    residual = mixed.astype(np.float64) - speech
    measured = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean(residual**2))
    assert measured == pytest.approx(snr_db, abs=1e-3)


@pytest.mark.parametrize("beta", [0.0, 1.0, 2.0])
def test_colored_noise_has_the_asked_spectral_slope(beta):
    x = colored_noise(1 << 16, beta, np.random.default_rng(6))
    freqs = np.fft.rfftfreq(len(x))[1:]
    power = np.abs(np.fft.rfft(x))[1:] ** 2
    slope = np.polyfit(np.log(freqs), np.log(power), 1)[0]
    assert slope == pytest.approx(-beta, abs=0.1)


def test_time_dropout_zeroes_short_spans_only():
    x = np.ones(N, dtype=np.float32)
    y = time_dropout(x, SR, max_ms=50, max_spans=3, rng=np.random.default_rng(7))
    zeros = np.flatnonzero(y == 0)
    assert 1 <= len(zeros) <= 3 * 800
    assert set(np.unique(y)) <= {0.0, 1.0}


def test_augmenter_is_a_pure_function_of_its_seed(tmp_path):
    rng = np.random.default_rng(8)
    for i, rate in enumerate((8000, 44100)):
        noise = rng.standard_normal(rate // 2).astype(np.float32) * 0.1
        sf.write(tmp_path / f"n{i}.wav", noise, rate)
    cfg = AugmentConfig(
        side="past",
        pitch_p=1.0,
        reverb_p=1.0,
        band_reject_p=1.0,
        colored_noise_p=1.0,
        corpus_noise_p=1.0,
        folder_noise_p=1.0,
        noise_dir=str(tmp_path),
        time_dropout_p=1.0,
    )
    corpus_speech = rng.standard_normal(5000).astype(np.float32)
    augmenter = Augmenter(cfg, SR, lambda r: corpus_speech[: int(r.integers(100, 5000))])
    x = (0.2 * rng.standard_normal(N)).astype(np.float32)
    a = augmenter(x, window_rng(0, 1, 2, 3))
    b = augmenter(x, window_rng(0, 1, 2, 3))
    c = augmenter(x, window_rng(0, 1, 2, 4))
    assert a.shape == x.shape and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_noise_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(ConfigError, match="expected a folder"):
        NoiseFolder(tmp_path / "missing", SR)
    with pytest.raises(ConfigError, match="found none"):
        NoiseFolder(tmp_path, SR)


def test_config_section_is_validated(tmp_path):
    assert not AugmentConfig().enabled
    assert not AugmentConfig(side="none", pitch_p=1.0).enabled
    assert AugmentConfig(side="past", pitch_p=1.0).enabled
    conf = tmp_path / "c.yaml"
    conf.write_text("data: {root: /x}\naugment: {side: past, pitch_p: 1.5}\n")
    with pytest.raises(ConfigError, match=r"augment.pitch_p must be in \[0, 1\]; found 1.5"):
        load_config(conf)
    conf.write_text("data: {root: /x}\naugment: {side: sideways}\n")
    with pytest.raises(ConfigError, match="augment.side must be one of"):
        load_config(conf)
    conf.write_text("data: {root: /x}\naugment: {reverb_rt60: [0.9, 0.2]}\n")
    with pytest.raises(ConfigError, match=r"augment.reverb_rt60 must be a range"):
        load_config(conf)
    conf.write_text("data: {root: /x}\naugment: {folder_noise_p: 0.5}\n")
    with pytest.raises(ConfigError, match="needs augment.noise_dir"):
        load_config(conf)


def _corpus(tmp_path) -> WindowCorpus:
    rng = np.random.default_rng(9)
    for s in range(2):
        (tmp_path / f"spk{s}").mkdir(parents=True, exist_ok=True)
        for u in range(2):
            x = (0.2 * rng.standard_normal(9000)).astype(np.float32)
            sf.write(tmp_path / f"spk{s}" / f"s{s}u{u}.flac", x, SR)
    return WindowCorpus(find_utterances(tmp_path), window=4000)


@pytest.mark.parametrize("side", ["past", "future", "both"])
def test_loader_gives_each_side_its_view_the_same_with_and_without_workers(tmp_path, side):
    corpus = _corpus(tmp_path)
    cfg = AugmentConfig(side=side, reverb_p=1.0, colored_noise_p=1.0, corpus_noise_p=1.0)
    augmenter = make_augmenter(cfg, corpus, SR)

    def batches(workers: int):
        sampler = WindowSampler(corpus, batch_size=2, seed=3, max_epochs=2)
        return list(make_loader(corpus, sampler, workers, augmenter, side))

    plain = list(make_loader(corpus, WindowSampler(corpus, batch_size=2, seed=3, max_epochs=2)))
    inline, workers = batches(0), batches(1)
    assert len(plain) == len(inline) == len(workers) > 0
    for clean, a, b in zip(plain, inline, workers, strict=True):
        torch.testing.assert_close(a.wav, b.wav, rtol=0, atol=0)
        if side == "both":
            assert a.wav_context is None and b.wav_context is None
            assert not torch.equal(a.wav, clean.wav)
            continue
        torch.testing.assert_close(a.wav_context, b.wav_context, rtol=0, atol=0)
        targets, context = (a.wav, a.wav_context) if side == "past" else (a.wav_context, a.wav)
        torch.testing.assert_close(targets, clean.wav, rtol=0, atol=0)  # the clean side
        assert not torch.equal(context, clean.wav)  # the augmented side


def test_training_lists_are_joined_and_a_repeated_id_is_an_error(tmp_path):
    corpus_dir = tmp_path / "audio"
    _corpus(corpus_dir)
    (tmp_path / "a.txt").write_text("s0u0\ns1u0\n")
    (tmp_path / "b.txt").write_text("s0u1\n")
    (tmp_path / "c.txt").write_text("s1u0\n")
    from cpcspeech.errors import CorpusError
    from cpcspeech.train.windows import load_split

    config = DataConfig(root=str(corpus_dir), window=4000)
    joined = load_split(config, (str(tmp_path / "a.txt"), str(tmp_path / "b.txt")))
    assert [u.utt_id for u in joined.utterances] == ["s0u0", "s1u0", "s0u1"]
    with pytest.raises(CorpusError, match="listed twice"):
        load_split(config, (str(tmp_path / "a.txt"), str(tmp_path / "c.txt")))
