"""The CTC phone-error-rate probe: its three target sources, PER 0 for a perfect feature and the
deletion rate for a constant one (a .npy-folder feature source), and ``cpcspeech probe per``."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from cpcspeech.errors import AlignmentError, CPCSpeechError
from cpcspeech.eval.data import resolve_eval_data
from cpcspeech.eval.features import load_feature_source
from cpcspeech.eval.per import PerOptions, format_per_table, per_source, probe_per, score
from cpcspeech.eval.phone_targets import (
    read_lexicon,
    read_phone_sequences,
    resolve_targets,
    sequence_from_frames,
    targets_from_text,
)
from cpcspeech.eval.probes import ProbeOptions
from cpcspeech.io.alignments import CANONICAL_INDEX, CANONICAL_PHONES, label_frames

PHONES = list(CANONICAL_PHONES)
SPEECH = ["AA", "B", "S", "M", "IY"]


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _ids(*names: str) -> list[int]:
    return [CANONICAL_INDEX[n] for n in names]


# ----- targets -----


def test_frame_labels_collapse_runs_then_drop_silence():
    frames = _ids("SIL", "SIL", "AA", "AA", "B", "SIL", "B", "B", "SPN", "S", "SIL")
    assert sequence_from_frames(np.asarray(frames), PHONES).tolist() == _ids("AA", "B", "B", "S")
    assert sequence_from_frames(np.asarray(_ids("SIL", "SPN")), PHONES).tolist() == []


def test_text_through_a_lexicon_strips_stress_and_reports_missing_words(tmp_path):
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text(
        ";;; a comment\nwe W IY1\nWE(2) W IH0\ncall K AO1 L\nIT IH1 T\nbear B EH1 R\n"
        "bear B AE1 R\n",
        encoding="utf-8",
    )
    text = tmp_path / "text"
    text.write_text("u1 WE CALL IT BEAR\nu2 we call zorp\nu3 ZORP ZORP BLIP\n", encoding="utf-8")
    assert read_lexicon(lexicon)["WE"] == ["W", "IY1"]  # the first pronunciation wins
    targets = targets_from_text(text, lexicon)
    assert targets.sequences["u1"].tolist() == _ids(
        "W", "IY", "K", "AO", "L", "IH", "T", "B", "EH", "R"
    )
    assert set(targets.sequences) == {"u1"}
    assert targets.missing_words == {"BLIP": 1, "ZORP": 3}
    assert set(targets.left_out) == {"u2", "u3"}
    line = targets.describe_left_out(["u1", "u2"])
    assert line.startswith("left out 1 of 2 utterances; 2 words missing from the lexicon: BLIP")


def test_phone_sequence_file_folds_symbols_and_drops_silence(tmp_path):
    path = tmp_path / "seqs.txt"
    path.write_text("u1 sil AH0 B_B ah1 SIL\nu2\n", encoding="utf-8")
    targets = read_phone_sequences(path)
    assert targets.sequences["u1"].tolist() == _ids("AH", "B", "AH")
    assert targets.sequences["u2"].tolist() == []
    path.write_text("u1 AA QQ\n", encoding="utf-8")
    with pytest.raises(AlignmentError, match="'QQ'"):
        read_phone_sequences(path)


def test_target_options_are_checked(tmp_path):
    with pytest.raises(CPCSpeechError, match="both or neither"):
        resolve_targets(None, text=tmp_path / "text")
    with pytest.raises(CPCSpeechError, match="one source"):
        resolve_targets(None, text="t", lexicon="l", phone_seqs="p")
    with pytest.raises(AlignmentError, match="expected phone targets"):
        resolve_targets(None)
    with pytest.raises(CPCSpeechError, match="--hidden 0"):
        PerOptions(ProbeOptions(hidden=8))
    with pytest.raises(CPCSpeechError, match="--beam"):
        PerOptions(beam=-1)
    assert PerOptions().lr == 1e-2 and PerOptions(ctc_hidden=4).lr == 2e-3


def test_score_is_corpus_level_and_reports_the_per_utterance_mean():
    refs = [np.asarray([1, 2, 3, 4]), np.asarray([5])]
    result = score(refs, [[1, 2, 3, 4], [6, 7]])  # 0 edits of 4, then 2 edits of 1
    assert result.per == pytest.approx(2 / 5)
    assert result.per_utterance_mean == pytest.approx((0 + 2) / 2)
    assert (result.substitutions, result.insertions, result.deletions) == (1, 1, 0)


# ----- a synthetic corpus with .npy features -----


def _npy_corpus(root: Path, n_utts: int = 16, seed: int = 0) -> Path:
    """A Kaldi data dir of silent audio, CPC-format frame labels (phones of 4-9 frames between
    silences), the splits, and two .npy feature folders: ``onehot/`` (the frame label, one-hot)
    and ``constant/`` (the same row everywhere)."""
    rng = np.random.default_rng(seed)
    for sub in ("wavs", "onehot", "constant"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    wav_scp, labels, utts = [], [], []
    for k in range(n_utts):
        utt = f"u{k:02d}"
        names = ["SIL"] + [str(p) for p in rng.choice(SPEECH, size=5)] + ["SIL"]
        frames = np.concatenate(
            [np.full(rng.integers(4, 10), CANONICAL_INDEX[n]) for n in names]
        )  # adjacent equal phones merge in both the targets and the features
        num_samples = 400 + 160 * (len(frames) - 1)
        assert label_frames(num_samples) == len(frames)
        sf.write(root / "wavs" / f"{utt}.wav", np.zeros(num_samples, np.float32), 16000)
        np.save(root / "onehot" / f"{utt}.npy", np.eye(len(PHONES), dtype=np.float32)[frames])
        np.save(root / "constant" / f"{utt}.npy", np.ones((len(frames), 4), np.float32))
        wav_scp.append(f"{utt} wavs/{utt}.wav")
        labels.append(f"{utt} " + " ".join(map(str, frames)))
        utts.append(utt)
    files = {
        "wav.scp": wav_scp, "utt2spk": [f"{u} spk" for u in utts],
        "converted_aligned_phones.txt": labels,
        "phones.txt": [f"{p} {i}" for i, p in enumerate(PHONES)],
        "train_split.txt": utts[: n_utts * 3 // 4], "test_split.txt": utts[n_utts * 3 // 4 :],
    }  # fmt: skip
    for name, lines in files.items():
        (root / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def npy_corpus(tmp_path_factory):
    return _npy_corpus(tmp_path_factory.mktemp("per"))


QUIET = ProbeOptions(epochs=60, progress=False)


def _run(root: Path, features: str, options: PerOptions):
    data = resolve_eval_data(root, root / "converted_aligned_phones.txt")
    targets = resolve_targets(data.alignment)
    return per_source(load_feature_source(str(root / features)), data, targets, "x", options)


def test_a_perfect_feature_gives_per_zero(npy_corpus):
    # A linear head sees one frame at a time: started with the blank below the phones it learns
    # to name every frame, which collapses to the exact sequence (see PerOptions.blank_bias).
    result = _run(npy_corpus, "onehot", PerOptions(QUIET, batch_size=4, blank_bias=-2.0))
    assert result.per == 0.0 and result.per_utterance_mean == 0.0
    assert result.ref_phones > 0 and result.n_test_utterances == 4
    assert result.details["head"] == "linear" and result.details["decoder"] == "greedy"


def test_a_perfect_feature_gives_per_zero_with_a_recurrent_head_or_the_beam(npy_corpus):
    # The recurrent head trains and decodes (its convergence on this tiny set is not pinned).
    options = PerOptions(ProbeOptions(epochs=3, progress=False), ctc_hidden=8, rnn="gru")
    result = _run(npy_corpus, "onehot", options)
    assert math.isfinite(result.per) and result.details["head"] == "bigru(8)+linear"
    beamed = _run(npy_corpus, "onehot", PerOptions(QUIET, batch_size=4, blank_bias=-2.0, beam=4))
    assert beamed.details["greedy_per"] == 0.0 and beamed.details["decoder"] == "beam(4)"


def test_a_constant_feature_gives_the_deletion_rate(npy_corpus):
    result = _run(npy_corpus, "constant", PerOptions(QUIET, batch_size=2))
    assert result.per == 1.0  # every reference phone deleted: the head only says "blank"
    assert result.deletions == result.ref_phones
    assert result.substitutions == result.insertions == 0


def test_probe_per_writes_strict_json_and_a_table(npy_corpus, tmp_path):
    data = resolve_eval_data(npy_corpus, npy_corpus / "converted_aligned_phones.txt")
    options = PerOptions(ProbeOptions(epochs=2, progress=False))
    results, summary = probe_per(data, str(npy_corpus / "constant"), False, options, tmp_path)
    saved = json.loads((tmp_path / "per.json").read_text(encoding="utf-8"))
    assert saved["results"][0]["per"] == results[0].per
    assert (tmp_path / "per.md").read_text(encoding="utf-8") == format_per_table(results)
    assert "PER " in summary and "every listed utterance has targets" in summary
    results[0].per_utterance_mean = math.nan  # a NaN is refused, not written as NaN
    with pytest.raises(ValueError):
        json.dumps(results[0].to_dict(), allow_nan=False)


# ----- the command line on tiny real audio -----


def _tone_corpus(root: Path) -> Path:
    """Audio where each phone is a tone, with CPC-format labels, a Kaldi text and a lexicon."""
    tones = {"AA": 400.0, "S": 3000.0, "M": 1200.0}
    words = {"AM": ["AA", "M"], "SAM": ["S", "AA", "M"], "MA": ["M", "AA"]}
    rng = np.random.default_rng(0)
    (root / "wavs").mkdir(parents=True)
    lines: dict[str, list[str]] = {k: [] for k in ("wav.scp", "utt2spk", "labels", "text")}
    for k in range(8):
        utt = f"s{k % 2}-{k:02d}"
        said = [str(w) for w in rng.choice(list(words), size=3)]
        phones = ["SIL"] + [p for w in said for p in words[w]] + ["SIL"]
        owner = np.repeat(np.arange(len(phones)), rng.integers(8, 14, size=len(phones)) * 160)
        t = np.arange(owner.size) / 16000.0
        wav = 0.002 * rng.standard_normal(t.size)
        for i, phone in enumerate(phones):
            if phone in tones:
                wav[owner == i] += 0.5 * np.sin(2 * np.pi * tones[phone] * t[owner == i])
        sf.write(root / "wavs" / f"{utt}.wav", wav.astype(np.float32), 16000)
        centres = 160 * np.arange(label_frames(owner.size)) + 200
        labels = [CANONICAL_INDEX[phones[owner[c]]] for c in centres]
        lines["wav.scp"].append(f"{utt} wavs/{utt}.wav")
        lines["utt2spk"].append(f"{utt} s{k % 2}")
        lines["labels"].append(f"{utt} " + " ".join(map(str, labels)))
        lines["text"].append(f"{utt} " + " ".join(said))
    lines["lexicon"] = [f"{w} " + " ".join(p + "1" for p in ph) for w, ph in words.items()]
    lines["train_split.txt"] = [u.split()[0] for u in lines["wav.scp"][:6]]
    lines["test_split.txt"] = [u.split()[0] for u in lines["wav.scp"][6:]]
    for name, content in lines.items():
        name = {"labels": "converted_aligned_phones.txt", "lexicon": "lexicon.txt"}.get(name, name)
        (root / name).write_text("\n".join(content) + "\n", encoding="utf-8")
    (root / "phones.txt").write_text(
        "\n".join(f"{p} {i}" for i, p in enumerate(PHONES)) + "\n", encoding="utf-8"
    )
    return root


@pytest.fixture(scope="module")
def tone_corpus(tmp_path_factory):
    return _tone_corpus(tmp_path_factory.mktemp("tones") / "data")


def test_cli_probe_per_table_from_labels(tone_corpus, tmp_path):
    from cpcspeech.cli import app

    out = tmp_path / "per"
    labels = tone_corpus / "converted_aligned_phones.txt"
    args = ["probe", "per", "--table", "--data", str(tone_corpus), "--labels", str(labels),
            "--model", "mfcc", "--epochs", "2", "--out", str(out), "-q"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "per.json").read_text(encoding="utf-8"))
    methods = [r["method"] for r in saved["results"]]
    assert methods == ["Random initialization", "MFCC features"]  # mfcc is a baseline row
    assert all(0.0 <= r["per"] for r in saved["results"])
    assert "| Random initialization |" in (out / "per.md").read_text(encoding="utf-8")
    assert "wrote" in result.output


def test_cli_probe_per_from_text_and_phone_sequences(tone_corpus, tmp_path):
    from cpcspeech.cli import app

    seqs = tmp_path / "seqs.txt"
    text = (tone_corpus / "text").read_text(encoding="utf-8").splitlines()
    words = {"AM": "AA M", "SAM": "S AA M", "MA": "M AA"}
    seqs.write_text(
        "\n".join(f"{t.split()[0]} " + " ".join(words[w] for w in t.split()[1:]) for t in text),
        encoding="utf-8",
    )
    common = ["probe", "per", "--data", str(tone_corpus), "--model", "mfcc", "--epochs", "2",
              "-q", "--beam", "2"]  # fmt: skip
    by_text = CliRunner().invoke(
        app, common + ["--text", str(tone_corpus / "text"), "--lexicon",
                       str(tone_corpus / "lexicon.txt"), "--out", str(tmp_path / "a")],
    )  # fmt: skip
    by_seqs = CliRunner().invoke(
        app, common + ["--phone-seqs", str(seqs), "--out", str(tmp_path / "b")]
    )
    assert by_text.exit_code == 0 and by_seqs.exit_code == 0, by_text.output + by_seqs.output
    a, b = (json.loads((tmp_path / d / "per.json").read_text(encoding="utf-8")) for d in "ab")
    assert a["results"][0]["per"] == b["results"][0]["per"]  # the same targets, the same run
    assert a["results"][0]["details"]["decoder"] == "beam(2)"


def test_cli_probe_per_errors_are_one_line(tone_corpus):
    from cpcspeech.cli import app

    result = CliRunner().invoke(
        app, ["probe", "per", "--data", str(tone_corpus), "--text", str(tone_corpus / "text")]
    )
    assert result.exit_code == 2
    assert "error: --text and --lexicon: expected both or neither" in result.output
    assert len(result.output.strip().splitlines()) == 1
