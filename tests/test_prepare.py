"""recipes/librispeech/prepare.sh against a local HTTP server: checksums, idempotence, resume.

The server (127.0.0.1 only) serves a LibriSpeech-shaped archive and CPC-style split and label
files built here; no test touches the network.
"""

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import threading
import zipfile
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from paths import REPO

from cpcspeech.io.corpus import find_utterances

PREPARE = REPO / "recipes" / "librispeech" / "prepare.sh"
UTTERANCES = ["19-198-0000", "19-198-0001", "26-495-0000", "26-495-0001"]
TRAIN_SPLIT = "19-198-0000\n26-495-0000\n19-198-0001\n"
TEST_SPLIT = "26-495-0001\n"

pytestmark = pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("curl") is None,
    reason="prepare.sh needs bash and curl",
)


def _fixture_files() -> dict[str, bytes]:
    """URL path -> bytes: the archive, the two split files and the zipped frame labels."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add("LibriSpeech/README.TXT", b"LibriSpeech-shaped test fixture\n")
        rng = np.random.default_rng(0)
        for utt in UTTERANCES:
            speaker, chapter, _ = utt.split("-")
            flac = io.BytesIO()
            wav = (0.1 * rng.standard_normal(1600)).astype(np.float32)
            sf.write(flac, wav, 16000, format="FLAC")
            add(f"LibriSpeech/train-clean-100/{speaker}/{chapter}/{utt}.flac", flac.getvalue())
    labels = "".join(f"{utt} " + " ".join(["0"] * 3 + ["5"] * 6) + "\n" for utt in UTTERANCES)
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("converted_aligned_phones.txt", labels)
    return {
        "/train-clean-100.tar.gz": archive.getvalue(),
        "/labels/train_split.txt": TRAIN_SPLIT.encode(),
        "/labels/test_split.txt": TEST_SPLIT.encode(),
        "/labels/converted_aligned_phones.zip": zipped.getvalue(),
    }


class FixtureServer:
    """Serves ``files`` with Range support; can cut the first response to a path halfway."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = dict(files)
        self.requests: Counter[str] = Counter()
        self.ranges: list[tuple[str, str | None]] = []
        self.cut_first: set[str] = set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.split("?")[0]
                server.requests[path] += 1
                server.ranges.append((path, self.headers.get("Range")))
                data = server.files.get(path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                header = self.headers.get("Range")
                if header and header.startswith("bytes=") and header.endswith("-"):
                    start = int(header[len("bytes=") : -1])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if path in server.cut_first and server.requests[path] == 1:
                    # Promise the whole body, send half, drop the connection: a broken download.
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FixtureServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    with FixtureServer(_fixture_files()) as srv:
        yield srv


def _run(server: FixtureServer, data_dir: Path, *args: str, **env_overrides: str):
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(
        DATA_DIR=str(data_dir),
        LIBRISPEECH_URL=f"{server.url}/train-clean-100.tar.gz",
        LIBRISPEECH_MD5=hashlib.md5(server.files["/train-clean-100.tar.gz"]).hexdigest(),
        CPC_LABELS_BASE_URL=f"{server.url}/labels",
        DOWNLOAD_RETRY_WAIT="0",
        DOWNLOAD_CONNECT_TIMEOUT="5",
        DOWNLOAD_STALL_SECONDS="10",
        NO_PROXY="127.0.0.1",
    )
    env.update(env_overrides)
    return subprocess.run(
        ["bash", str(PREPARE), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_full_run_places_verified_files_and_second_run_downloads_nothing(server, tmp_path):
    data = tmp_path / "data"
    result = _run(server, data)
    assert result.returncode == 0, result.stderr + result.stdout

    archive = data / "downloads" / "train-clean-100.tar.gz"
    assert archive.read_bytes() == server.files["/train-clean-100.tar.gz"]
    assert (data / "downloads" / "train-clean-100.tar.gz.done").read_text().strip() == (
        hashlib.md5(archive.read_bytes()).hexdigest()
    )
    assert not list((data / "downloads").glob("*.part*"))
    for utt in UTTERANCES:
        spk, chapter, _ = utt.split("-")
        assert (data / "LibriSpeech" / "train-clean-100" / spk / chapter / f"{utt}.flac").is_file()

    labels = data / "LibriSpeech100_labels_split"
    assert (labels / "train_split.txt").read_text() == TRAIN_SPLIT
    assert (labels / "test_split.txt").read_text() == TEST_SPLIT
    phones = (labels / "converted_aligned_phones.txt").read_text().splitlines()
    assert [line.split()[0] for line in phones] == UTTERANCES
    recorded = dict(
        reversed(line.split()) for line in (labels / "checksums.sha256").read_text().splitlines()
    )
    assert set(recorded) == {
        "train_split.txt",
        "test_split.txt",
        "converted_aligned_phones.zip",
        "converted_aligned_phones.txt",
    }
    for name, sha in recorded.items():
        assert _sha256(labels / name) == sha

    kaldi = data / "kaldi" / "train-clean-100"
    utts = find_utterances(kaldi, labels / "train_split.txt")
    assert [u.utt_id for u in utts] == TRAIN_SPLIT.split()
    assert [u.speaker for u in utts] == ["19", "26", "19"]
    assert all(u.path.is_file() for u in utts)
    assert (kaldi / "spk2utt").read_text().splitlines() == [
        "19 19-198-0000 19-198-0001",
        "26 26-495-0000 26-495-0001",
    ]

    before = dict(server.requests)
    assert before == {path: 1 for path in server.files}
    again = _run(server, data)
    assert again.returncode == 0, again.stderr + again.stdout
    assert dict(server.requests) == before  # idempotent: nothing downloaded twice
    assert "already verified" in again.stdout and "already extracted" in again.stdout


def test_interrupted_download_resumes_on_the_next_run(server, tmp_path):
    data = tmp_path / "data"
    path = "/train-clean-100.tar.gz"
    size = len(server.files[path])
    server.cut_first.add(path)

    first = _run(server, data, "--stop-stage", "1", DOWNLOAD_RETRIES="1")
    assert first.returncode != 0
    assert "run again to resume" in first.stderr
    part = data / "downloads" / "train-clean-100.tar.gz.part"
    assert 0 < part.stat().st_size < size
    assert not (data / "downloads" / "train-clean-100.tar.gz").exists()
    assert not (data / "downloads" / "train-clean-100.tar.gz.done").exists()

    second = _run(server, data, "--stop-stage", "1")
    assert second.returncode == 0, second.stderr + second.stdout
    assert server.ranges[-1] == (path, f"bytes={size // 2}-")  # resumed, not restarted
    assert (data / "downloads" / "train-clean-100.tar.gz").read_bytes() == server.files[path]
    assert not part.exists()


def test_leftover_part_files_complete_or_overlong(server, tmp_path):
    path = "/train-clean-100.tar.gz"
    url = f"{server.url}{path}"
    downloads = tmp_path / "data" / "downloads"
    downloads.mkdir(parents=True)
    part = downloads / "train-clean-100.tar.gz.part"
    # Killed between the download and the rename: the part is whole, nothing is fetched again.
    part.write_bytes(server.files[path])
    (downloads / "train-clean-100.tar.gz.part.url").write_text(url + "\n")
    result = _run(server, tmp_path / "data", "--stop-stage", "1")
    assert result.returncode == 0, result.stderr + result.stdout
    assert server.requests[path] == 0

    # Longer than the file (corrupt): the server answers 416, the script starts over.
    (downloads / "train-clean-100.tar.gz").rename(part)
    (downloads / "train-clean-100.tar.gz.done").unlink()
    part.write_bytes(server.files[path] + b"junk")
    (downloads / "train-clean-100.tar.gz.part.url").write_text(url + "\n")
    result = _run(server, tmp_path / "data", "--stop-stage", "1")
    assert result.returncode == 0, result.stderr + result.stdout
    assert [r for _, r in server.ranges] == [f"bytes={len(server.files[path]) + 4}-", None]
    assert (downloads / "train-clean-100.tar.gz").read_bytes() == server.files[path]


def test_broken_connection_is_resumed_within_one_run(server, tmp_path):
    data = tmp_path / "data"
    server.cut_first.add("/labels/converted_aligned_phones.zip")
    result = _run(server, data, "--stage", "3", "--stop-stage", "3")
    assert result.returncode == 0, result.stderr + result.stdout
    assert server.requests["/labels/converted_aligned_phones.zip"] == 2
    assert server.ranges[-1][1] is not None and server.ranges[-1][1].startswith("bytes=")
    zipped = data / "LibriSpeech100_labels_split" / "converted_aligned_phones.zip"
    assert zipped.read_bytes() == server.files["/labels/converted_aligned_phones.zip"]


def test_wrong_checksum_fails_clearly_and_keeps_nothing_that_looks_complete(server, tmp_path):
    data = tmp_path / "data"
    result = _run(server, data, "--stop-stage", "2", LIBRISPEECH_MD5="0" * 32)
    assert result.returncode != 0
    assert f"expected md5 {'0' * 32}, found " in result.stderr
    assert "checksum mismatch" in result.stderr
    leftovers = sorted(p.name for p in (data / "downloads").iterdir())
    assert leftovers == []
    assert not (data / "LibriSpeech").exists()


def test_changed_label_file_fails_against_recorded_sha256(server, tmp_path):
    data = tmp_path / "data"
    assert _run(server, data, "--stage", "3", "--stop-stage", "3").returncode == 0
    split = data / "LibriSpeech100_labels_split" / "train_split.txt"
    split.write_text(TRAIN_SPLIT + "8888-1-0001\n")
    result = _run(server, data, "--stage", "3", "--stop-stage", "3")
    assert result.returncode != 0
    assert "expected sha256" in result.stderr and "checksums.sha256" in result.stderr

    # Deleted: it is downloaded again and checked against the sha256 recorded the first time.
    split.unlink()
    server.files["/labels/train_split.txt"] = b"19-198-0000\n"  # the mirror changed
    result = _run(server, data, "--stage", "3", "--stop-stage", "3")
    assert result.returncode != 0
    assert "expected sha256" in result.stderr and "the download was deleted" in result.stderr
    assert not split.exists() and not list(split.parent.glob("*.part*"))


def test_error_page_instead_of_labels_stops_with_manual_instructions(server, tmp_path):
    data = tmp_path / "data"
    server.files["/labels/test_split.txt"] = b"<html><body>Quota exceeded</body></html>\n"
    result = _run(server, data, "--stage", "3", "--stop-stage", "3")
    assert result.returncode != 0
    assert "could not download test_split.txt" in result.stderr
    assert "drive.google.com/drive/folders/1BhJ2umKH3whguxMwifaKtSra0TgAbtfb" in result.stderr
    assert "--stage 3" in result.stderr
    labels = data / "LibriSpeech100_labels_split"
    assert not (labels / "test_split.txt").exists()
    assert not list(labels.glob("*.part*"))


def test_bad_arguments_and_missing_stage_inputs(server, tmp_path):
    result = _run(server, tmp_path / "data", "--stage", "x")
    assert result.returncode != 0 and "expected a number" in result.stderr
    result = _run(server, tmp_path / "data", "--stage", "2", "--stop-stage", "2")
    assert result.returncode != 0 and "run stage 1 first" in result.stderr
    assert sum(server.requests.values()) == 0
