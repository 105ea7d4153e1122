"""Hub loading through huggingface_hub's real network code, against a local stand-in Hub server.

The stand-in (127.0.0.1, a thread) serves what snapshot_download / hf_hub_download request:
  GET  /api/models/{org}/{name}/revision/{rev}   repo info: {"id", "sha", "siblings": [...]}
  GET  /api/models/{org}/{name}/tree/{rev}       file list: [{"type", "path", "size", "oid", "lfs"}]
  HEAD /{org}/{name}/resolve/{rev}/{file}        X-Repo-Commit, ETag, Content-Length
                                                 (+ X-Linked-Etag, X-Linked-Size for LFS files)
  GET  /{org}/{name}/resolve/{rev}/{file}        the bytes; honours "Range: bytes=N-" (206)
  POST /_test/control                            test-only: {"mode": "normal" | "down"}
  POST /api/repos/create, /api/validate-yaml,    what HfApi.create_repo and upload_folder send
       /api/models/{org}/{name}/preupload/{rev}  (every file "regular": no LFS transfer);
       /api/models/{org}/{name}/commit/{rev}     the ndjson commit becomes the repo's new commit
Unknown repos, revisions and files get 404 with the Hub's X-Error-Code header. Loads run in
subprocesses because huggingface_hub reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE at import.
"""

import base64
import hashlib
import json
import os
import pickle
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import torch
from paths import TESTS_DATA
from safetensors.torch import load_file
from samples import make_tiny_model

from cpcspeech.model.cpc import CPCModel


# ----- the stand-in Hub -----
@dataclass
class FakeRepo:
    files: dict[str, bytes]
    refs: tuple[str, ...] = ("main",)
    lfs: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")
    commit: str = ""

    def __post_init__(self) -> None:
        digest = hashlib.sha1()
        for name in sorted(self.files):
            digest.update(name.encode() + hashlib.sha256(self.files[name]).digest())
        self.commit = digest.hexdigest()

    def blob_id(self, name: str) -> str:  # git's blob sha1
        data = self.files[name]
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    def etag(self, name: str) -> str:
        if name in self.lfs:
            return hashlib.sha256(self.files[name]).hexdigest()
        return self.blob_id(name)


@dataclass
class FakeHub:
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    mode: str = "normal"  # "down": every request gets 503
    # (repo_id, file) -> "fail" or "resume": the next GET is cut after half the bytes; the
    # client's retry (ranged if it kept some bytes) then fails with 500 ("fail") or is served.
    cuts: dict[tuple[str, str], str] = field(default_factory=dict)
    cut_done: dict[tuple[str, str], str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def resolve(self, repo_id: str, revision: str) -> FakeRepo | None:
        repo = self.repos[repo_id]
        return repo if revision in repo.refs or revision == repo.commit else None


class HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    hub: FakeHub  # set on the subclass made per server

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if urlsplit(self.path).path == "/_test/control":
            self.hub.mode = json.loads(body)["mode"]
            self.send_json(200, {"mode": self.hub.mode})
            return
        parts = [unquote(p) for p in urlsplit(self.path).path.split("/")[1:]]
        with self.hub.lock:
            self.hub.requests.append(("POST", "/".join(parts), None))
        if parts == ["api", "repos", "create"]:
            self.create_repo(json.loads(body))
        elif parts == ["api", "validate-yaml"]:
            self.send_json(200, {"errors": [], "warnings": []})
        elif len(parts) >= 6 and parts[:2] == ["api", "models"] and parts[4] == "preupload":
            files = json.loads(body)["files"]
            modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                     for f in files]  # fmt: skip
            self.send_json(200, {"files": modes})
        elif len(parts) >= 6 and parts[:2] == ["api", "models"] and parts[4] == "commit":
            self.commit(f"{parts[2]}/{parts[3]}", "/".join(parts[5:]), body)
        else:
            self.send_json(404, {"error": "not found"})

    def create_repo(self, payload: dict) -> None:
        repo_id = f"{payload['organization']}/{payload['name']}"
        with self.hub.lock:
            if repo_id in self.hub.repos:
                self.error(409, None, "You already created this model repo")
                return
            self.hub.repos[repo_id] = FakeRepo({})
        self.send_json(200, {"url": f"{self.hub.endpoint}/{repo_id}"})

    def commit(self, repo_id: str, revision: str, body: bytes) -> None:
        """Apply an ndjson commit (header + base64 "file" lines) as the repo's new commit."""
        if repo_id not in self.hub.repos:
            self.error(404, "RepoNotFound", "Repository not found")
            return
        old = self.hub.repos[repo_id]
        files = dict(old.files)
        for line in body.splitlines():
            item = json.loads(line)
            if item["key"] == "file":
                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
        with self.hub.lock:
            new = FakeRepo(files, refs=tuple(dict.fromkeys((*old.refs, revision))))
            self.hub.repos[repo_id] = new
        url = f"{self.hub.endpoint}/{repo_id}/commit/{new.commit}"
        self.send_json(200, {"commitUrl": url, "commitOid": new.commit, "pullRequestUrl": None})

    def do_HEAD(self) -> None:  # noqa: N802
        self.route(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self.route(head=False)

    # ----- helpers -----
    def send_json(self, status: int, value: object, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, val in (headers or {}).items():
            self.send_header(key, val)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def error(self, status: int, code: str | None, message: str, **headers: str) -> None:
        extra = {"X-Error-Message": message, **headers}
        if code:
            extra["X-Error-Code"] = code
        self.send_json(status, {"error": message}, extra)

    def route(self, head: bool) -> None:
        parts = [unquote(p) for p in urlsplit(self.path).path.split("/")[1:]]
        with self.hub.lock:
            self.hub.requests.append((self.command, "/".join(parts), self.headers.get("Range")))
        if self.hub.mode == "down":
            self.error(503, None, "Service Unavailable")
            return
        if len(parts) >= 6 and parts[0] == "api" and parts[1] == "models":
            repo_id, action, revision = f"{parts[2]}/{parts[3]}", parts[4], "/".join(parts[5:])
            self.api(repo_id, action, revision)
        elif len(parts) >= 5 and parts[2] == "resolve":
            repo_id, revision, filename = f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:])
            self.resolve_file(repo_id, revision, filename, head)
        else:
            self.error(404, None, f"no route for {self.path}")

    def api(self, repo_id: str, action: str, revision: str) -> None:
        if repo_id not in self.hub.repos:
            self.error(404, "RepoNotFound", "Repository not found")
            return
        repo = self.hub.resolve(repo_id, revision)
        if repo is None:
            self.error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return
        if action == "revision":
            siblings = [{"rfilename": name} for name in sorted(repo.files)]
            self.send_json(200, {"id": repo_id, "sha": repo.commit, "siblings": siblings})
        elif action == "tree":
            entries = []
            for name in sorted(repo.files):
                entry = {
                    "type": "file",
                    "path": name,
                    "size": len(repo.files[name]),
                    "oid": repo.blob_id(name),
                }
                if name in repo.lfs:
                    entry["lfs"] = {
                        "oid": repo.etag(name),
                        "size": entry["size"],
                        "pointerSize": 134,
                    }
                entries.append(entry)
            self.send_json(200, entries)
        else:
            self.error(404, None, f"unknown api {action}")

    def resolve_file(self, repo_id: str, revision: str, filename: str, head: bool) -> None:
        if repo_id not in self.hub.repos:
            self.error(404, "RepoNotFound", "Repository not found")
            return
        repo = self.hub.resolve(repo_id, revision)
        if repo is None:
            self.error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return
        if filename not in repo.files:
            self.error(404, "EntryNotFound", "Entry not found", **{"X-Repo-Commit": repo.commit})
            return
        data, etag = repo.files[filename], repo.etag(filename)
        key = (repo_id, filename)
        start = 0
        range_header = self.headers.get("Range")
        if not head and self.hub.cut_done.pop(key, None) == "fail":
            self.error(500, None, "Internal Error")
            return
        if not head and range_header:
            start = int(range_header.removeprefix("bytes=").split("-")[0])
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", repo.commit)
        self.send_header("ETag", f'"{etag}"')
        if filename in repo.lfs:
            self.send_header("X-Linked-Etag", f'"{etag}"')
            self.send_header("X-Linked-Size", str(len(data)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(data) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if head:
            return
        then = self.hub.cuts.pop(key, None)
        if then is not None:  # the connection drops half-way through the body
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.hub.cut_done[key] = then
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(data[start:])


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A running stand-in Hub with a real model and several broken repos."""
    root = tmp_path_factory.mktemp("hub")
    model_dir = make_tiny_model(0).save_pretrained(root / "model")
    # Full size (23 MB): more than huggingface_hub's 10 MiB download chunk, so a connection cut
    # half-way leaves bytes on disk and the retry resumes them with a Range request.
    big_dir = CPCModel().save_pretrained(root / "big")
    (model_dir / "README.md").write_text("# test model\n", encoding="utf-8")
    good = {name: (model_dir / name).read_bytes() for name in ("config.json", "model.safetensors")}
    good["README.md"] = (model_dir / "README.md").read_bytes()
    marker = root / "unpickled"
    bomb = pickle.dumps(_Bomb(str(marker)))
    wrong = json.dumps({"model_type": "bert", "hidden_size": 8}).encode()
    fake = FakeHub()
    fake.repos = {
        "org/name": FakeRepo(
            {**good, "pytorch_model.bin": bomb, ".gitattributes": b"*.bin filter=lfs\n"},
            refs=("main", "v1.0"),
        ),
        "org/no-config": FakeRepo({"model.safetensors": good["model.safetensors"]}),
        "org/wrong-type": FakeRepo(
            {"config.json": wrong, "model.safetensors": good["model.safetensors"]}
        ),
        "org/bin-only": FakeRepo({"pytorch_model.bin": bomb, ".gitattributes": b""}),
        "org/bin-and-config": FakeRepo(
            {"config.json": good["config.json"], "pytorch_model.bin": bomb}
        ),
        "org/flaky": FakeRepo(dict(good)),
        "org/resume": FakeRepo(
            {n: (big_dir / n).read_bytes() for n in ("config.json", "model.safetensors")}
        ),
    }
    handler = type("Handler", (HubHandler,), {"hub": fake})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    fake.model_dir = model_dir
    fake.big_dir = big_dir
    fake.marker = marker
    yield fake
    server.shutdown()
    server.server_close()


class _Bomb:
    """Unpickling this creates a folder: proof that a pickle was (never) loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


# ----- the loading process -----
CHILD = r"""
import json, os, sys, urllib.request
from pathlib import Path
import torch
from safetensors.torch import save_file
from cpcspeech import load_model
from cpcspeech.errors import CPCSpeechError
from cpcspeech.weights.resolve import describe_model_source, locate_model

jobs = json.loads(Path(sys.argv[1]).read_text())
out = Path(sys.argv[2])
results = []
for i, job in enumerate(jobs):
    if "control" in job:
        request = urllib.request.Request(
            os.environ["HF_ENDPOINT"] + "/_test/control",
            data=json.dumps(job["control"]).encode(), method="POST")
        urllib.request.urlopen(request).read()
        results.append({})
        continue
    if "list_cache" in job:
        root = Path(os.environ["HF_HOME"]) / "hub"
        results.append({"files": sorted(
            str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink())})
        continue
    try:
        model, _ = load_model(job["spec"], revision=job.get("revision"))
    except CPCSpeechError as err:
        results.append({"ok": False, "type": type(err).__name__, "error": str(err)})
        continue
    wav = torch.linspace(-1, 1, 3200).sin().unsqueeze(0)
    with torch.no_grad():
        z, c = model(wav)
    save_file({"z": z.contiguous(), "c": c.contiguous()}, str(out / f"{i}.safetensors"))
    source = locate_model(job["spec"], job.get("revision"), local_files_only=True)
    results.append({
        "ok": True, "dir": str(source.directory), "commit": source.commit,
        "describe": describe_model_source(job["spec"], job.get("revision")),
    })
(out / "results.json").write_text(json.dumps(results))
"""


def child_env(endpoint: str, hf_home: Path, offline: bool = False) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))
        and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HOME=str(hf_home),
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        NO_PROXY="127.0.0.1,localhost",
    )
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


def run_jobs(jobs: list[dict], env: dict[str, str], work: Path) -> list[dict]:
    work.mkdir(parents=True, exist_ok=True)
    (work / "jobs.json").write_text(json.dumps(jobs))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(work / "jobs.json"), str(work)],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads((work / "results.json").read_text())
    for i, result in enumerate(results):
        if result.get("ok"):
            result["outputs"] = load_file(str(work / f"{i}.safetensors"))
    return results


def reference_outputs(model_dir: Path) -> dict[str, torch.Tensor]:
    model = CPCModel.from_directory(model_dir).eval()
    wav = torch.linspace(-1, 1, 3200).sin().unsqueeze(0)
    with torch.no_grad():
        z, c = model(wav)
    return {"z": z, "c": c}


def assert_same(outputs: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> None:
    assert torch.equal(outputs["z"], reference["z"]) and torch.equal(outputs["c"], reference["c"])


ONLINE_JOBS = [
    {"spec": "org/name"},  # 0
    {"spec": "org/name@v1.0"},  # 1
    {"spec": "org/name", "revision": "v1.0"},  # 2
    {"spec": "org/name@COMMIT"},  # 3 (filled in)
    {"spec": "org/name@v1.0", "revision": "main"},  # 4 conflict
    {"spec": "org/missing"},  # 5
    {"spec": "org/name@nope"},  # 6
    {"spec": "org/no-config"},  # 7
    {"spec": "org/wrong-type"},  # 8
    {"spec": "org/bin-only"},  # 9
    {"spec": "org/bin-and-config"},  # 10
    {"spec": "org/flaky"},  # 11: cut mid-file, the ranged retry fails
    {"list_cache": True},  # 12
    {"control": {"mode": "down"}},  # 13
    {"spec": "org/flaky"},  # 14: Hub down, cached snapshot incomplete
    {"control": {"mode": "normal"}},  # 15
    {"spec": "org/flaky"},  # 16: retry succeeds
    {"spec": "org/resume"},  # 17: cut mid-file, resumed with a Range request
]


@pytest.fixture(scope="module")
def online(hub, tmp_path_factory):
    """Run the online jobs once in one process; several tests read the results."""
    work = tmp_path_factory.mktemp("online")
    jobs = [dict(job) for job in ONLINE_JOBS]
    jobs[3]["spec"] = f"org/name@{hub.repos['org/name'].commit}"
    hub.cuts[("org/flaky", "model.safetensors")] = "fail"
    hub.cuts[("org/resume", "model.safetensors")] = "resume"
    hf_home = work / "hf"
    results = run_jobs(jobs, child_env(hub.endpoint, hf_home), work / "run")
    return {"results": results, "hf_home": hf_home, "requests": list(hub.requests)}


def test_load_by_repo_id_and_revision(hub, online) -> None:
    results = online["results"]
    reference = reference_outputs(hub.model_dir)
    commit = hub.repos["org/name"].commit
    for i in (0, 1, 2, 3):
        assert results[i]["ok"], results[i]
        assert_same(results[i]["outputs"], reference)
        assert results[i]["commit"] == commit
        assert Path(results[i]["dir"]).parent.name == "snapshots"
    assert results[0]["describe"].startswith(f"Hub org/name (commit {commit}")
    assert results[1]["describe"].startswith(f"Hub org/name@v1.0 (commit {commit}")
    # Only config.json, model.safetensors and README.md are ever fetched.
    fetched = {
        path.rsplit("/", 1)[-1] for method, path, _ in online["requests"] if "resolve" in path
    }
    assert fetched == {"config.json", "model.safetensors", "README.md"}


def test_revision_conflict_and_missing_repos(online) -> None:
    results = online["results"]
    assert results[4]["type"] == "ModelLoadError"
    assert "revision given twice and they differ" in results[4]["error"]
    assert "Hub repo 'org/missing' not found" in results[5]["error"]
    assert "revision 'nope' not found" in results[6]["error"]


def test_repos_that_are_not_cpcspeech_models(hub, online) -> None:
    results = online["results"]
    assert "expected a cpcspeech config.json, found none" in results[7]["error"]
    assert "['model.safetensors']" in results[7]["error"]
    assert "expected model_type 'cpcspeech-cpc', found 'bert'" in results[8]["error"]
    assert "expected a cpcspeech config.json, found none" in results[9]["error"]
    assert "pytorch_model.bin" in results[9]["error"]
    assert "expected model.safetensors, found none" in results[10]["error"]
    assert "never loads" in results[10]["error"]
    # The pickles were never downloaded, let alone unpickled.
    assert not any(path.endswith(".bin") for _, path, _ in online["requests"])
    assert not hub.marker.exists()


def test_interrupted_download_never_loads_a_half_file(hub, online) -> None:
    results = online["results"]
    reference = reference_outputs(hub.model_dir)
    # 1. The connection drops half-way and the resume fails: a clear error.
    assert results[11]["type"] == "ModelLoadError", results[11]
    assert "download failed" in results[11]["error"]
    # ... and the cache holds no weights for that repo: no blob, no pointer, no partial file.
    flaky = [f for f in results[12]["files"] if f.startswith("models--org--flaky/")]
    sha = hub.repos["org/flaky"].etag("model.safetensors")
    assert not any(f.endswith("model.safetensors") or sha in f for f in flaky), flaky
    assert not any(f.endswith(".incomplete") for f in results[12]["files"])
    # 2. With the Hub unavailable, the partial snapshot is reported, not loaded.
    assert results[14]["type"] == "ModelLoadError"
    assert "incomplete in the local cache" in results[14]["error"]
    assert "answered HTTP 503" in results[14]["error"]
    assert "cpcspeech download org/flaky" in results[14]["error"]
    # 3. A retry downloads the whole file and loads the identical model.
    assert results[16]["ok"], results[16]
    assert_same(results[16]["outputs"], reference)
    # A single dropped connection is resumed by huggingface_hub with a Range request.
    assert results[17]["ok"], results[17]
    assert_same(results[17]["outputs"], reference_outputs(hub.big_dir))
    weights = [p for m, p, _ in online["requests"] if p.startswith("org/resume/resolve/")]
    gets = [
        r
        for m, p, r in online["requests"]
        if m == "GET" and p in weights and p.endswith("/model.safetensors")
    ]
    assert len(gets) == 2 and gets[0] is None and gets[1] == f"bytes={10 * 1024 * 1024}-"


def test_offline_loads_from_cache_and_fails_clearly_when_absent(hub, online, tmp_path) -> None:
    before = len(hub.requests)
    jobs = [
        {"spec": "org/name"},
        {"spec": "org/name@v1.0"},
        {"spec": "org/resume"},
        {"spec": "org/other"},
    ]
    env = child_env(hub.endpoint, online["hf_home"], offline=True)
    results = run_jobs(jobs, env, tmp_path / "offline")
    references = [reference_outputs(hub.model_dir)] * 2 + [reference_outputs(hub.big_dir)]
    for result, reference in zip(results[:3], references, strict=True):
        assert result["ok"], result
        assert_same(result["outputs"], reference)
    error = results[3]["error"]
    assert results[3]["type"] == "ModelLoadError"
    assert "offline mode is on (HF_HUB_OFFLINE=1)" in error and "not in the local cache" in error
    assert "cpcspeech download org/other" in error and "HF_ENDPOINT" in error
    assert len(hub.requests) == before  # offline means no request at all


def test_unreachable_hub_with_empty_cache(tmp_path) -> None:
    with socket.socket() as sock:  # a port with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = child_env(f"http://127.0.0.1:{port}", tmp_path / "hf")
    (result,) = run_jobs([{"spec": "org/name@v1.0"}], env, tmp_path / "work")
    assert result["type"] == "ModelLoadError"
    assert f"the Hub at http://127.0.0.1:{port} is unreachable" in result["error"]
    assert "cpcspeech download org/name@v1.0" in result["error"]


def test_download_command(hub, tmp_path) -> None:
    hf_home = tmp_path / "hf"
    env = child_env(hub.endpoint, hf_home)
    done = subprocess.run(
        [sys.executable, "-m", "cpcspeech", "download", "org/name@v1.0"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    folder = Path(done.stdout.strip().splitlines()[-1])
    assert folder.is_relative_to(hf_home)
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    assert "Hub org/name@v1.0" in done.stderr
    reference = reference_outputs(hub.model_dir)
    assert_same(reference_outputs(folder), reference)


# ----- publishing: convert a CPC_audio checkpoint, push it, load it back by repo id -----
def test_convert_push_and_load_back_by_repo_id(hub, tmp_path) -> None:
    """`cpcspeech convert ... && cpcspeech push OUT ORG/NAME` gives a repo `--model` loads."""
    source = TESTS_DATA / "cpc_audio" / "release_layernorm_lstm2.pt"
    out = tmp_path / "converted"
    env = child_env(hub.endpoint, tmp_path / "hf")
    env["HF_TOKEN"] = "hf_test_token"  # the stand-in accepts any token
    cli = [sys.executable, "-m", "cpcspeech"]
    for args in (["convert", str(source), str(out)], ["push", str(out), "org/converted"]):
        done = subprocess.run(
            [*cli, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    pushed = hub.repos["org/converted"]
    assert sorted(pushed.files) == ["README.md", "config.json", "model.safetensors"]
    assert pushed.files["model.safetensors"] == (out / "model.safetensors").read_bytes()
    results = run_jobs([{"spec": "org/converted"}], env, tmp_path / "load")
    assert results[0]["ok"], results[0]
    assert_same(results[0]["outputs"], reference_outputs(out))
    assert results[0]["commit"] == pushed.commit
