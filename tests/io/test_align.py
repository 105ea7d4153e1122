"""Forced alignment (cpcspeech/io/align.py, cpcspeech/io/sphinx.py): transcripts, lexicons, the
silence check, outputs, reports and resume with a stand-in aligner; pocketsphinx itself on real
speechocean762 utterances (skipped without the [align] extra or the shared data)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cpcspeech.errors import AlignmentError, CorpusError
from cpcspeech.io import align
from cpcspeech.io.alignments import CANONICAL_PHONES, label_frames, read_cpc_alignment
from cpcspeech.io.sphinx import PhoneSegment, read_lexicon

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "speechocean762-train"
HAVE_SPHINX = True
try:
    import pocketsphinx  # noqa: F401
except ImportError:
    HAVE_SPHINX = False
needs_sphinx = pytest.mark.skipif(
    not HAVE_SPHINX, reason="pocketsphinx is not installed (pip install 'cpcspeech[align]')"
)
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} is absent")


def test_transcripts_are_lower_cased_and_lose_edge_punctuation():
    assert align.normalise_words("Hello, WORLD. Can't  stop!") == (
        "hello",
        "world",
        "can't",
        "stop",
    )
    assert align.normalise_words(" -- ") == ()


def test_a_lexicon_drops_stress_and_merges_alternates(tmp_path):
    lex = tmp_path / "lex.txt"
    lex.write_text(";;; comment\nBALT B AO1 L T\nbalt(2) B AA1 L T\n\nJUMPPED JH AH1 M P T\n")
    assert read_lexicon(lex) == {
        "balt": [["B", "AO", "L", "T"], ["B", "AA", "L", "T"]],
        "jumpped": [["JH", "AH", "M", "P", "T"]],
    }
    lex.write_text("OK OW K\nBAD B XX1\n")
    with pytest.raises(AlignmentError, match=r"lex.txt:2: .*'XX1'"):
        read_lexicon(lex)


def test_the_silence_check_measures_loud_frames_labelled_silence():
    t = np.arange(16000) / 16000
    wav = np.where(t < 0.5, 0.5 * np.sin(2 * np.pi * 200 * t), 1e-4).astype(np.float32)
    frames = label_frames(len(wav))  # 98
    speech_then_silence = [PhoneSegment("AH", 0, 48), PhoneSegment("SIL", 48, frames - 48)]
    all_silence = [PhoneSegment("SIL", 0, frames)]
    assert align.loud_silence(wav, speech_then_silence) < 0.05
    assert align.loud_silence(wav, all_silence) == 1.0


class FakeAligner:
    """Stands in for SphinxAligner: one phone per word, SIL around; 'zzz' is not in its
    dictionary and 'fail' cannot be aligned."""

    calls = 0

    def __init__(self, lexicon=None):
        self.lexicon = lexicon

    def close(self):
        pass

    def missing_words(self, words):
        return [w for w in dict.fromkeys(words) if w == "zzz"]

    def align(self, wav, words):
        FakeAligner.calls += 1
        if "fail" in words:
            raise AlignmentError("no word alignment found")
        frames = label_frames(len(wav))
        step = (frames - 2) // len(words)
        segs = [PhoneSegment("SIL", 0, 1)]
        for i, _ in enumerate(words):
            segs.append(PhoneSegment("AH" if i % 2 else "IY", 1 + i * step, step))
        end = 1 + len(words) * step
        return segs + [PhoneSegment("SIL", end, frames - end)], False


def _tone(path: Path, seconds: float) -> int:
    n = int(seconds * 16000)
    sf.write(path, 0.3 * np.sin(np.arange(n) * 0.05).astype(np.float32), 16000, subtype="PCM_16")
    return n


def test_a_folder_is_aligned_reported_and_resumed(tmp_path, monkeypatch):
    monkeypatch.setattr(align, "SphinxAligner", FakeAligner)
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    sizes = {
        "a": _tone(corpus / "a.wav", 1.0),
        "sub/b": _tone(corpus / "sub" / "b.flac", 0.73),
    }
    _tone(corpus / "c.wav", 0.5)
    _tone(corpus / "d.wav", 0.5)
    _tone(corpus / "e.wav", 0.5)
    (corpus / "a.txt").write_text("Hello, world\n")
    (corpus / "sub" / "b.lab").write_text("one two three")
    (corpus / "c.txt").write_text("a zzz word")
    (corpus / "d.txt").write_text("fail here")  # e.wav has no transcript
    out = tmp_path / "out"
    FakeAligner.calls = 0
    summary = align.align_corpus(corpus, out)
    assert [summary.count(s) for s in ("ok", "oov", "failed", "no-transcript")] == [2, 1, 1, 1]
    assert FakeAligner.calls == 3
    assert "aligned 2 of 5 utterances" in summary.describe()
    phones = (out / "phones.txt").read_text().splitlines()
    assert phones == [f"{p} {i}" for i, p in enumerate(CANONICAL_PHONES)]
    labels = read_cpc_alignment(out / "converted_aligned_phones.txt", out / "phones.txt")
    assert sorted(labels.labels) == ["a", "sub/b"]
    for uid, n in sizes.items():
        assert len(labels[uid]) == label_frames(n)
    ctm = (out / "alignments.ctm").read_text().splitlines()
    assert ctm[0] == "a 1 0.00 0.01 SIL" and ctm[1].endswith(" IY")
    unaligned = (out / "unaligned.tsv").read_text().splitlines()[1:]
    assert [line.split("\t")[:2] for line in unaligned] == [
        ["c", "oov"], ["d", "failed"], ["e", "no-transcript"]
    ]  # fmt: skip
    assert (out / "oov_words.txt").read_text().splitlines()[1] == "zzz\t1\tc"
    # a re-run aligns nothing again and writes the same files
    before = (out / "converted_aligned_phones.txt").read_text()
    FakeAligner.calls = 0
    again = align.align_corpus(corpus, out)
    assert FakeAligner.calls == 0 and again.reused == 4
    assert (out / "converted_aligned_phones.txt").read_text() == before
    # a changed transcript is aligned again; a torn journal line is ignored
    (corpus / "d.txt").write_text("now it works")
    with open(out / align.JOURNAL, "a") as f:
        f.write('{"id": "x", "sta')
    third = align.align_corpus(corpus, out)
    assert FakeAligner.calls == 1 and third.count("ok") == 3


def test_a_data_dir_without_text_is_one_error(tmp_path):
    _tone(tmp_path / "a.wav", 0.5)
    (tmp_path / "wav.scp").write_text(f"u1 {tmp_path / 'a.wav'}\n")
    with pytest.raises(CorpusError, match="no text"):
        align.find_transcribed(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "cpcspeech", "align", str(tmp_path), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1


def test_without_pocketsphinx_the_error_names_the_extra(tmp_path):
    code = (
        "import sys\nfrom importlib.abc import MetaPathFinder\n"
        "class Absent(MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'pocketsphinx':\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Absent())\n"
        "from cpcspeech.io import align\nfrom cpcspeech.errors import CPCSpeechError\n"
        "try:\n    align.SphinxAligner()\nexcept CPCSpeechError as err:\n    print(err)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert "pip install 'cpcspeech[align]'" in result.stdout, result.stderr


def _subset(tmp_path: Path, ids: list[str], text: dict[str, str] | None = None) -> Path:
    """A Kaldi data dir of some speechocean762 utterances (absolute audio paths)."""
    wav = dict(line.split() for line in (DATA / "wav.scp").read_text().splitlines())
    ref = dict(line.split(maxsplit=1) for line in (DATA / "text").read_text().splitlines())
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "wav.scp").write_text("".join(f"{u} {DATA / wav[u]}\n" for u in ids))
    (folder / "text").write_text("".join(f"{u} {(text or {}).get(u, ref[u])}\n" for u in ids))
    return folder


@needs_sphinx
@needs_data
def test_pocketsphinx_agrees_with_the_shipped_labels(tmp_path):
    ids = ["000010011", "000010035", "000010053"]
    out = tmp_path / "out"
    summary = align.align_corpus(_subset(tmp_path, ids), out)
    assert summary.count("ok") == 3
    ours = read_cpc_alignment(out / "converted_aligned_phones.txt", out / "phones.txt")
    ref = read_cpc_alignment(DATA / "converted_aligned_phones.txt", DATA / "phones.txt")
    agree = total = 0
    for uid in ids:
        assert len(ours[uid]) == len(ref[uid])  # 1 + (N - 400) // 160, pocketsphinx's extra cut
        agree += int((ours[uid] == ref[uid]).sum())
        total += len(ref[uid])
    assert agree / total >= 0.85


@needs_sphinx
@needs_data
def test_oov_words_are_reported_and_a_lexicon_supplies_them(tmp_path):
    ids = ["000010011", "000480019"]  # TINA CAN DRAW THE BALT: 'balt' is not in cmudict
    data = _subset(tmp_path, ids)
    summary = align.align_corpus(data, tmp_path / "a")
    assert summary.count("oov") == 1 and list(summary.oov_words) == ["balt"]
    lex = tmp_path / "lex.txt"
    lex.write_text("BALT B AO1 L T\n")
    assert align.align_corpus(data, tmp_path / "b", lexicon=lex).count("ok") == 2
    with pytest.raises(AlignmentError, match="--lexicon: expected a CMUdict-format file"):
        align.align_corpus(data, tmp_path / "c", lexicon=tmp_path / "missing.dict")


@needs_sphinx
@needs_data
def test_a_transcript_that_misses_the_speech_is_refused(tmp_path):
    data = _subset(tmp_path, ["000010011"], {"000010011": "A"})
    with pytest.raises(Exception, match="expected at least one aligned utterance"):
        align.align_corpus(data, tmp_path / "out")
    row = (tmp_path / "out" / "unaligned.tsv").read_text().splitlines()[1].split("\t")
    assert row[:2] == ["000010011", "failed"]
    journal = [json.loads(x) for x in (tmp_path / "out" / align.JOURNAL).read_text().splitlines()]
    assert journal[1]["status"] == "failed"
