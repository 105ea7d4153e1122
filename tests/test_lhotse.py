"""lhotse through the real library: the registered "cpc" extractor, its frame count against
lhotse's compute_num_frames, CutSet.compute_and_store_features, and manifests as extract input."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from paths import SHARED_DATA
from samples import noise
from typer.testing import CliRunner

from cpcspeech import load_model
from cpcspeech.cli import app
from cpcspeech.errors import ConfigError, CPCSpeechError
from cpcspeech.io.audio import load_audio, resampled_length, to_mono
from cpcspeech.io.corpus import find_utterances
from cpcspeech.io.index import read_index
from cpcspeech.model.cpc import CPCModel

lhotse = pytest.importorskip("lhotse", reason="lhotse not installed (pip install '.[lhotse]')")
from lhotse.features.base import get_extractor_type  # noqa: E402
from lhotse.utils import compute_num_frames  # noqa: E402

from cpcspeech.lhotse_ext import (  # noqa: E402
    CPCFeatureConfig,
    CPCFeatureExtractor,
    match_lhotse_frames,
)

DATA = SHARED_DATA
runner = CliRunner()


@pytest.fixture
def audio_dir(tmp_path) -> Path:
    """Lengths chosen so lhotse wants one frame more than CPC gives (a.wav, c.wav) or the same."""
    root = tmp_path / "audio"
    root.mkdir()
    noise(root / "a.wav", 16000, 1.0 + 100 / 16000, seed=1)  # N % 160 = 100: lhotse +1
    noise(root / "b.flac", 44100, 0.8, seed=2, channels=2)
    noise(root / "c.wav", 8000, 0.615, seed=3)  # 4920 samples (lhotse 62), 9840 at 16 kHz (61)
    return root


@pytest.fixture(scope="module")
def model() -> CPCModel:
    return load_model("default")[0]


def ours(model: CPCModel, wav: np.ndarray, layer: str = "c") -> np.ndarray:
    with torch.inference_mode():
        return model.extract(torch.from_numpy(wav), layer=layer).numpy()  # (T, D)


def test_frame_rule_reconciled_with_lhotse():
    """At 16 kHz lhotse counts (N + 80) // 160 frames, CPC (N + 1) // 160: lhotse has one more
    exactly when 80 <= N % 160 <= 158. The extra frame repeats the last one; real frames stay."""
    for n in range(159, 3400):
        ours_count = (n + 1) // 160
        theirs = compute_num_frames(n / 16000, 0.01, 16000)
        assert theirs == (n + 80) // 160
        assert theirs - ours_count == (1 if 80 <= n % 160 <= 158 else 0)
        feats = np.arange(ours_count * 2, dtype=np.float32).reshape(ours_count, 2)
        matched = match_lhotse_frames(feats, n, 16000, 0.01)
        assert matched.shape == (theirs, 2)
        np.testing.assert_array_equal(matched[:ours_count], feats)
        np.testing.assert_array_equal(
            matched[ours_count:], feats[-1:].repeat(theirs - ours_count, 0)
        )
    # Other rates: counted on the recording's own samples, CPC on the resampled ones.
    for rate in (8000, 22000, 44100, 48000):
        for n in range(rate // 100, rate // 100 * 40, 7):
            ours_count = (resampled_length(n, rate) + 1) // 160
            feats = np.zeros((ours_count, 3), np.float32)
            matched = match_lhotse_frames(feats, n, rate, 0.01)
            assert matched.shape[0] == compute_num_frames(n / rate, 0.01, rate)
    with pytest.raises(CPCSpeechError, match="lhotse expects 10 frames .* found 6"):
        match_lhotse_frames(np.zeros((6, 2), np.float32), 1600, 16000, 0.01)


def test_extractor_is_registered_with_a_dataclass_config(model):
    assert get_extractor_type("cpc") is CPCFeatureExtractor
    extractor = CPCFeatureExtractor(CPCFeatureConfig(layer="z"))
    assert extractor.frame_shift == 0.01
    assert extractor.feature_dim(16000) == 512
    assert CPCFeatureExtractor().feature_dim(16000) == 256
    # lhotse's own (de)serialisation of extractors by name.
    rebuilt = lhotse.FeatureExtractor.from_dict(extractor.to_dict())
    assert type(rebuilt) is CPCFeatureExtractor and rebuilt.config == extractor.config
    with pytest.raises(ConfigError, match="layer: expected 'c' or 'z', found 'x'"):
        CPCFeatureConfig(layer="x")
    with pytest.raises(TypeError):
        CPCFeatureConfig(laier="c")  # unknown keys are errors


def sorted_recordings(audio_dir: Path):
    """A RecordingSet of the folder's files in name order, ids = file stems."""
    files = sorted(audio_dir.iterdir())
    return lhotse.RecordingSet.from_recordings(lhotse.Recording.from_file(p) for p in files)


def cuts_by_recording(audio_dir: Path) -> dict:
    """One cut per file, with the recording's id (the file stem) as cut id."""
    cuts = lhotse.CutSet.from_manifests(recordings=sorted_recordings(audio_dir))
    return {cut.recording_id: cut.with_id(cut.recording_id) for cut in cuts}


def test_compute_and_store_features_on_a_cutset(tmp_path, audio_dir, model):
    by_id = cuts_by_recording(audio_dir)
    trimmed = by_id["a"].truncate(offset=0.25, duration=0.5, preserve_id=False).with_id("a_part")
    cuts = lhotse.CutSet.from_cuts([*by_id.values(), trimmed])
    with_feats = cuts.compute_and_store_features(
        extractor=CPCFeatureExtractor(), storage_path=tmp_path / "feats", progress_bar=False
    )
    paths = {"a": "a.wav", "b": "b.flac", "c": "c.wav", "a_part": "a.wav"}
    for cut in with_feats:
        feats = cut.load_features()
        assert cut.features.type == "cpc" and cut.features.frame_shift == 0.01
        assert feats.shape == (cut.num_frames, 256)
        assert cut.num_frames == compute_num_frames(cut.duration, 0.01, cut.sampling_rate)
        wav = load_audio(audio_dir / paths[cut.id])
        if cut.id == "a_part":
            wav = wav[4000:12000]  # 0.25 s .. 0.75 s at 16 kHz
        expected = ours(model, wav)
        extra = cut.num_frames - expected.shape[0]
        assert extra == {"a": 1, "b": 0, "c": 1, "a_part": 0}[cut.id]
        np.testing.assert_allclose(feats[: expected.shape[0]], expected, atol=1e-6)
        np.testing.assert_array_equal(feats[expected.shape[0] :], feats[-1:].repeat(extra, 0))


def test_extract_accepts_cutset_and_recordingset_manifests(tmp_path, audio_dir, model):
    sorted_recordings(audio_dir).to_file(tmp_path / "recordings.jsonl.gz")
    by_id = cuts_by_recording(audio_dir)
    part = by_id["c"].truncate(offset=0.1, duration=0.4, preserve_id=False).with_id("c_part")
    lhotse.CutSet.from_cuts([by_id["a"], part]).to_file(tmp_path / "cuts.jsonl.gz")

    out = tmp_path / "by_cut"
    args = ["--out", str(out) + "/", "--model", "default", "--quiet"]
    result = runner.invoke(app, ["extract", str(tmp_path / "cuts.jsonl.gz"), *args])
    assert result.exit_code == 0, result.output
    # cpcspeech's own frame rule here: (N + 1) // 160, no lhotse padding.
    expected = ours(model, load_audio(audio_dir / "a.wav"))
    np.testing.assert_array_equal(np.load(out / "a.npy"), expected)
    part_8k = sf.read(str(audio_dir / "c.wav"), dtype="float32")[0][800:4000]  # 0.1 s .. 0.5 s
    expected = ours(model, to_mono("c_part", part_8k[:, None], 8000, 16000, 1))
    np.testing.assert_allclose(np.load(out / "c_part.npy"), expected, atol=1e-6)

    stacked = tmp_path / "rec.npy"
    args = ["--out", str(stacked), "--model", "default", "--quiet"]
    result = runner.invoke(app, ["extract", str(tmp_path / "recordings.jsonl.gz"), *args])
    assert result.exit_code == 0, result.output
    rows = read_index(tmp_path / "rec.index.tsv")
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    assert rows[0]["path"].endswith("recordings.jsonl.gz#a")
    assert float(rows[1]["seconds"]) == pytest.approx(0.8, abs=1e-4)


def test_non_audio_manifest_is_refused(tmp_path, audio_dir):
    sups = lhotse.SupervisionSet.from_segments(
        [lhotse.SupervisionSegment(id="s", recording_id="a", start=0, duration=1)]
    )
    sups.to_file(tmp_path / "sups.jsonl.gz")
    result = runner.invoke(
        app, ["extract", str(tmp_path / "sups.jsonl.gz"), "--out", str(tmp_path / "f.npy")]
    )
    assert result.exit_code == 2
    assert "expected a lhotse CutSet or RecordingSet manifest" in " ".join(result.output.split())


def test_real_speech_cutset(tmp_path, model):
    if not DATA.is_dir():
        pytest.skip(f"shared data folder not found: {DATA}")
    lines = (DATA / "wav.scp").read_text().splitlines()[:2]
    recordings = lhotse.RecordingSet.from_recordings(
        lhotse.Recording.from_file(DATA / rel, recording_id=utt)
        for utt, rel in map(str.split, lines)
    )
    cuts = lhotse.CutSet.from_manifests(recordings=recordings)
    cuts = lhotse.CutSet.from_cuts(cut.with_id(cut.recording_id) for cut in cuts)
    cuts = cuts.compute_and_store_features(
        extractor=CPCFeatureExtractor(), storage_path=tmp_path / "feats", progress_bar=False
    )
    for cut, (utt, rel) in zip(cuts, map(str.split, lines), strict=True):
        expected = ours(model, load_audio(DATA / rel))
        feats = cut.load_features()
        assert cut.id == utt and feats.shape == (cut.num_frames, 256)
        assert cut.num_frames - expected.shape[0] in (0, 1)
        np.testing.assert_allclose(feats[: expected.shape[0]], expected, atol=1e-6)


def test_cutset_is_a_corpus_with_speakers_and_a_recordingset_is_refused(tmp_path, audio_dir):
    """Training, probes, ABX and t-SNE read manifests through the same AudioSource as extract."""
    recordings = sorted_recordings(audio_dir)
    sups = lhotse.SupervisionSet.from_segments(
        lhotse.SupervisionSegment(id=r.id, recording_id=r.id, start=0, duration=r.duration,
                                  speaker=f"spk_{r.id}")
        for r in recordings
    )  # fmt: skip
    cuts = lhotse.CutSet.from_manifests(recordings=recordings, supervisions=sups)
    cuts = lhotse.CutSet.from_cuts(c.with_id(c.recording_id) for c in cuts)
    cuts.to_file(tmp_path / "cuts.jsonl.gz")
    utts = find_utterances(tmp_path / "cuts.jsonl.gz")
    assert [(u.utt_id, u.speaker, u.kind) for u in utts] == [
        ("a", "spk_a", "lhotse"), ("b", "spk_b", "lhotse"), ("c", "spk_c", "lhotse"),
    ]  # fmt: skip
    np.testing.assert_array_equal(utts[0].load(), load_audio(audio_dir / "a.wav"))
    assert utts[2].measure().num_samples == 9840
    recordings.to_file(tmp_path / "recordings.jsonl.gz")
    with pytest.raises(CPCSpeechError, match="expected a speaker for utterance 'a', found none"):
        find_utterances(tmp_path / "recordings.jsonl.gz")
