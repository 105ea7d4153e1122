"""The trust boundary (issue 20, class 1): data files run or fetch nothing without the opt-in.

wav.scp commands (any *.scp list, Kaldi data dirs with segments, corpora) and lhotse sources
other than file and memory (command, url with pipe:, http urls) are refused at discovery, with
one line naming the file, the line and --allow-commands; a marker file shows nothing ran. With
--allow-commands, allow_commands=True or CPCSPEECH_ALLOW_COMMANDS=1 they run.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from cpcspeech.cli import app
from cpcspeech.errors import UntrustedInputError
from cpcspeech.io.corpus import find_utterances
from cpcspeech.io.sources import find_sources
from cpcspeech.io.trust import ALLOW_COMMANDS_ENV

pytest.importorskip("kaldiio")
SECONDS = 0.5


@pytest.fixture(autouse=True)
def _no_env_opt_in(monkeypatch):
    monkeypatch.delenv(ALLOW_COMMANDS_ENV, raising=False)


@pytest.fixture
def wav(tmp_path) -> Path:
    path = tmp_path / "a.wav"
    sf.write(path, np.random.default_rng(0).normal(0, 0.1, int(16000 * SECONDS)), 16000)
    return path


def _extract(*args: str, env: dict | None = None):
    argv = ["extract", *args, "--model", "random", "--quiet"]
    return CliRunner().invoke(app, argv, env={"COLUMNS": "300", **(env or {})})


def _refused(result, where: str) -> str:
    assert result.exit_code == 2, result.output
    lines = [x for x in result.output.splitlines() if x.strip() and not x.startswith("weights:")]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert where in lines[0] and "--allow-commands" in lines[0], lines[0]
    return lines[0]


# ----- wav.scp commands -----


def _scp(tmp_path: Path, wav: Path, name: str = "wav.scp") -> tuple[Path, Path]:
    marker = tmp_path / "MARKER"
    scp = tmp_path / name
    scp.write_text(f"u0 {wav}\nu1 touch {marker}; cat {wav} |\n", encoding="utf-8")
    return scp, marker


@pytest.mark.parametrize("name", ["wav.scp", "list.scp"])
def test_a_scp_command_is_refused_before_anything_runs(tmp_path, wav, name):
    scp, marker = _scp(tmp_path, wav, name)
    _refused(_extract(str(scp), "--out", str(tmp_path / "f.npy")), f"{scp}:2")
    assert not marker.exists()
    assert not (tmp_path / "f.npy").exists()


def test_allow_commands_flag_runs_it(tmp_path, wav):
    scp, marker = _scp(tmp_path, wav)
    result = _extract(str(scp), "--out", str(tmp_path / "f.npy"), "--allow-commands")
    assert result.exit_code == 0, result.output
    assert marker.exists() and (tmp_path / "f.npy").is_file()


def test_environment_variable_runs_it(tmp_path, wav):
    scp, marker = _scp(tmp_path, wav)
    result = _extract(str(scp), "--out", str(tmp_path / "f.npy"), env={ALLOW_COMMANDS_ENV: "1"})
    assert result.exit_code == 0, result.output
    assert marker.exists()


def test_environment_variable_off_or_garbled(tmp_path, wav, monkeypatch):
    scp, marker = _scp(tmp_path, wav)
    monkeypatch.setenv(ALLOW_COMMANDS_ENV, "0")
    with pytest.raises(UntrustedInputError, match=r"wav\.scp:2: a shell command"):
        find_sources(scp)
    monkeypatch.setenv(ALLOW_COMMANDS_ENV, "maybe")
    with pytest.raises(Exception, match=f"{ALLOW_COMMANDS_ENV}: expected 1 or 0"):
        find_sources(scp)
    assert not marker.exists()


def test_api_argument(tmp_path, wav):
    scp, marker = _scp(tmp_path, wav)
    with pytest.raises(UntrustedInputError, match="--allow-commands"):
        find_sources(scp)
    items = find_sources(scp, allow_commands=True)
    assert [item.kind for item in items] == ["file", "command"] and not marker.exists()
    items[1].load()
    assert marker.exists()


def test_kaldi_data_dir_with_segments_and_corpus(tmp_path, wav):
    data = tmp_path / "data"
    data.mkdir()
    marker = tmp_path / "MARKER"
    (data / "wav.scp").write_text(f"r1 {wav}\nr2 touch {marker}; cat {wav} |\n", encoding="utf-8")
    (data / "segments").write_text("s1 r1 0 0.2\ns2 r2 0 0.2\n", encoding="utf-8")
    (data / "utt2spk").write_text("s1 a\ns2 b\n", encoding="utf-8")
    _refused(_extract(str(data), "--out", str(tmp_path / "f.npy")), "wav.scp:2")
    with pytest.raises(UntrustedInputError, match=r"wav\.scp:2"):
        find_utterances(data)
    assert not marker.exists()
    assert len(find_utterances(data, allow_commands=True)) == 2


def test_every_command_that_reads_audio_has_the_flag():
    for args in (
        ["extract"], ["train"], ["probe"], ["abx"], ["tsne"], ["units", "fit"], ["units", "apply"]
    ):  # fmt: skip
        result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "300"})
        assert "--allow-commands" in result.output, args


def test_units_apply_and_tsne_refuse_too(tmp_path, wav):
    scp, marker = _scp(tmp_path, wav)
    result = CliRunner().invoke(
        app, ["units", "apply", str(scp), "--codebook", str(tmp_path / "none"), "--out", "u.txt"]
    )
    assert result.exit_code == 2 and not marker.exists()
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text(f"u1 touch {marker}; cat {wav} |\n", encoding="utf-8")
    (data / "utt2spk").write_text("u1 a\n", encoding="utf-8")
    result = CliRunner().invoke(
        app, ["tsne", "--data", str(data), "--model", "random", "--out", str(tmp_path / "t.png")],
        env={"COLUMNS": "300"},
    )  # fmt: skip
    _refused(result, "wav.scp:1")
    assert not marker.exists()


# ----- lhotse sources -----


def _recording(rid: str, source: dict) -> dict:
    n = int(16000 * SECONDS)
    return {"id": rid, "sources": [{"channels": [0], **source}], "sampling_rate": 16000,
            "num_samples": n, "duration": SECONDS, "channel_ids": [0]}  # fmt: skip


def _manifest(tmp_path: Path, *recordings: dict) -> Path:
    pytest.importorskip("lhotse")
    path = tmp_path / "recordings.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recordings), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("kind", "value"),
    [("command", "touch {marker}; cat {wav}"), ("url", "pipe:touch {marker}; cat {wav}")],
)
def test_lhotse_command_and_pipe_url_sources(tmp_path, wav, kind, value):
    marker = tmp_path / "MARKER"
    source = {"type": kind, "source": value.format(marker=marker, wav=wav)}
    manifest = _manifest(
        tmp_path, _recording("ok", {"type": "file", "source": str(wav)}), _recording("x", source)
    )
    line = _refused(_extract(str(manifest), "--out", str(tmp_path / "f.npy")), f"{manifest}:2")
    assert repr(kind) in line
    assert not marker.exists() and not (tmp_path / "f.npy").exists()
    result = _extract(str(manifest), "--out", str(tmp_path / "f.npy"), "--allow-commands")
    assert result.exit_code == 0, result.output
    assert marker.exists()


def test_lhotse_http_url_is_not_fetched(tmp_path, wav):
    requests: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            requests.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/a.wav"
        manifest = _manifest(tmp_path, _recording("web", {"type": "url", "source": url}))
        _refused(_extract(str(manifest), "--out", str(tmp_path / "f.npy")), f"{manifest}:1")
    finally:
        server.shutdown()
        server.server_close()
    assert requests == []


def test_lhotse_file_and_memory_sources_need_no_opt_in(tmp_path, wav):
    manifest = _manifest(tmp_path, _recording("ok", {"type": "file", "source": str(wav)}))
    result = _extract(str(manifest), "--out", str(tmp_path / "f.npy"))
    assert result.exit_code == 0, result.output
