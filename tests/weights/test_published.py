"""Published checkpoints by name: download (resumable, sha256-checked), convert once, offline.

A file server on 127.0.0.1 (a thread started here) stands in for the release folder; the tests
point CPCSPEECH_CHECKPOINT_URL at it and the cache at a temporary folder.
"""

import hashlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from paths import REPO
from typer.testing import CliRunner

from cpcspeech.cli import app
from cpcspeech.errors import ModelLoadError
from cpcspeech.io.audio import load_audio
from cpcspeech.weights.convert import convert_checkpoint
from cpcspeech.weights.published import (
    DEFAULT_BASE_URL,
    PUBLISHED,
    PublishedCheckpoint,
    base_url,
    cache_root,
    resolve_published,
)
from cpcspeech.weights.resolve import load_model, locate_model

FIXTURE = REPO / "tests" / "data" / "cpc_audio" / "release_layernorm_lstm2.pt"
DATA = FIXTURE.read_bytes()
SHA = hashlib.sha256(DATA).hexdigest()
GOOD = f"tiny-{SHA[:8]}.pt"
BAD = "tiny-00000000.pt"  # served with the same bytes: the prefix cannot match


@dataclass
class Files:
    data: dict[str, bytes]
    cut_after: dict[str, int] = field(default_factory=dict)  # next GET sends only N bytes
    requests: list[tuple[str, str | None]] = field(default_factory=list)


def make_handler(files: Files) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            name = self.path.rsplit("/", 1)[-1]
            files.requests.append((name, self.headers.get("Range")))
            if name not in files.data:
                self.send_error(404)
                return
            body, status = files.data[name], 200
            ranged = self.headers.get("Range")
            if ranged and ranged.startswith("bytes=") and ranged.endswith("-"):
                start = int(ranged[6:-1])
                if start >= len(body):
                    self.send_error(416)
                    return
                body, status = body[start:], 206
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            cut = files.cut_after.pop(name, None)
            self.wfile.write(body if cut is None else body[:cut])

    return Handler


@pytest.fixture
def server():
    files = Files({GOOD: DATA, BAD: DATA})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(files))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield files, f"http://127.0.0.1:{httpd.server_address[1]}/releases"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def env(server, tmp_path, monkeypatch):
    files, url = server
    monkeypatch.setenv("CPCSPEECH_CHECKPOINT_URL", url)
    monkeypatch.setenv("CPCSPEECH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("CPCSPEECH_OFFLINE", raising=False)
    # Registry entries for the served files (data, not code: the real entries are unchanged).
    monkeypatch.setitem(PUBLISHED, "tiny", PublishedCheckpoint(GOOD, "fixture"))
    monkeypatch.setitem(PUBLISHED, "tiny-bad", PublishedCheckpoint(BAD, "wrong hash"))
    return files


def test_registry_names_and_urls(monkeypatch) -> None:
    assert {"librilight-60k", "librilight-6k", "librilight-600h"} <= set(PUBLISHED)
    assert PUBLISHED["librilight-60k"].file == "60k_epoch4-d0f474de.pt"
    assert PUBLISHED["librilight-60k"].sha256_prefix == "d0f474de"
    monkeypatch.delenv("CPCSPEECH_CHECKPOINT_URL", raising=False)
    assert base_url() == DEFAULT_BASE_URL
    monkeypatch.setenv("CPCSPEECH_CHECKPOINT_URL", "http://127.0.0.1:1/x")
    assert base_url() == "http://127.0.0.1:1/x/"


def test_cache_root_follows_the_standard_variables(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("CPCSPEECH_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert cache_root() == tmp_path / "hf" / "cpcspeech"
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "cpcspeech"


def test_download_verify_convert_once(env, monkeypatch) -> None:
    found = resolve_published("tiny")
    assert found.sha256 == SHA and found.checkpoint.read_bytes() == DATA
    assert env.requests == [(GOOD, None)]
    reference, _ = convert_checkpoint(FIXTURE)
    model, source = load_model("tiny")
    assert source.kind == "published" and source.directory == found.directory
    wav = torch.randn(8000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model.extract(wav), reference.extract(wav), rtol=0, atol=0)
    # Cached: no second request, even offline and with the file server gone from the URL.
    monkeypatch.setenv("CPCSPEECH_CHECKPOINT_URL", "http://127.0.0.1:1/nothing-here")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert load_model("tiny")[0].config == reference.config
    assert env.requests == [(GOOD, None)]
    assert SHA in (found.directory / "README.md").read_text(encoding="utf-8")


def test_resume_after_a_cut(env) -> None:
    env.cut_after[GOOD] = 10_000
    with pytest.raises(ModelLoadError, match=r"cut.*run again to resume"):
        resolve_published("tiny")
    part = cache_root() / "checkpoints" / f"{GOOD}.part"
    assert part.stat().st_size == 10_000
    assert not (cache_root() / "checkpoints" / GOOD).exists()  # never a final name for a part
    found = resolve_published("tiny", progress=True)  # the rich bar starts at 10000 bytes
    assert env.requests == [(GOOD, None), (GOOD, "bytes=10000-")]
    assert found.checkpoint.read_bytes() == DATA and not part.exists()


def test_wrong_hash_is_refused_and_deleted(env) -> None:
    with pytest.raises(
        ModelLoadError, match=r"sha256 expected to start with 00000000, found " + SHA
    ):
        resolve_published("tiny-bad")
    assert not (cache_root() / "checkpoints" / BAD).exists()
    assert not (cache_root() / "converted").exists() or not any(
        (cache_root() / "converted").iterdir()
    )


def test_offline_with_nothing_cached_says_what_to_download(env, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    target = cache_root() / "checkpoints" / GOOD
    with pytest.raises(ModelLoadError, match=r"offline") as err:
        locate_model("tiny")
    assert f"/releases/{GOOD}" in str(err.value) and str(target) in str(err.value)
    assert env.requests == []
    # Doing what the message says makes it work offline.
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(DATA)
    assert load_model("tiny")[1].kind == "published"
    assert env.requests == []


def test_unreachable_server_is_a_clear_error(env, monkeypatch) -> None:
    monkeypatch.setenv("CPCSPEECH_CHECKPOINT_URL", "http://127.0.0.1:1/")
    with pytest.raises(ModelLoadError, match=r"download of http://127.0.0.1:1/tiny-.*failed"):
        resolve_published("tiny")


def test_models_command_and_extract_by_name(env, tmp_path) -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["models"], env={"COLUMNS": "300"})
    assert listed.exit_code == 0, listed.output
    assert "librilight-60k" in listed.output and "60k_epoch4-d0f474de.pt" in listed.output
    assert "tiny" in listed.output and "not cached" in listed.output
    out = tmp_path / "feats.npy"
    audio = REPO / "examples" / "audio" / "hello.flac"
    result = runner.invoke(app, ["extract", str(audio), "-o", str(out), "-m", "tiny", "-q"])
    assert result.exit_code == 0, result.output
    reference, _ = convert_checkpoint(FIXTURE)
    expected = reference.extract(load_audio(audio)).numpy()
    np.testing.assert_array_equal(np.load(out), expected)
    assert "converted" in runner.invoke(app, ["models"], env={"COLUMNS": "300"}).output


def test_download_command_prefetches_a_published_name(env, monkeypatch) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["download", "tiny"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert str(cache_root() / "converted") in result.output
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert load_model("tiny")[1].kind == "published"
    assert env.requests == [(GOOD, None)]
    refused = runner.invoke(app, ["download", "tiny@v1"], env={"COLUMNS": "300"})
    assert refused.exit_code == 2
