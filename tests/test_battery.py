"""The hostile-input battery (issue 20): bad files and options, as a hostile but realistic user
would give them, through every command.

Each case builds its inputs in a fresh folder and runs the CLI once. Every case must end with a
non-zero exit status, exactly one stderr line, starting with ``error:`` (no traceback, no
"internal error": bad input is never a bug), nothing new in the output location, no temporary
file left anywhere, and no marker file (which a command in a data file would create).
The memory cases of class 2 run under a capped address space in tests/weights/test_memory_bounds.py
and tests/io/test_audio_bounds.py instead.
"""

import json
import os
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file
from tone_corpus import tone_corpus
from typer.testing import CliRunner

from cpcspeech.cli import app
from cpcspeech.config import ModelConfig
from cpcspeech.eval.units import Codebook, save_codebook
from cpcspeech.model.cpc import CPCModel
from cpcspeech.model.random_init import random_model
from cpcspeech.model.serialization import parameters_sha256

REPO = Path(__file__).resolve().parents[1]
CPC_AUDIO = REPO / "tests" / "data" / "cpc_audio"
SMOKE = REPO / "recipes" / "smoke" / "conf.yaml"
NOT_UTF8 = b"\xff\xfe"


@dataclass
class Case:
    """The arguments of one run, the paths that must not exist afterwards, extra environment."""

    args: list[str]
    absent: list[Path] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


# ----- small inputs -----


def wav(path: Path, seconds: float = 0.5, rate: int = 16000, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sf.write(str(path), rng.normal(0, 0.1, int(rate * seconds)).astype(np.float32), rate)
    return path


def kaldi_dir(tmp: Path, segments: str | bytes | None = None, wav_scp: bytes | None = None) -> Path:
    """A Kaldi data dir of two recordings; ``segments`` / ``wav_scp`` replace those files."""
    data = tmp / "data"
    wav(data / "r1.wav", 1.0)
    wav(data / "r2.wav", 1.0, seed=1)
    (data / "wav.scp").write_bytes(wav_scp or b"r1 r1.wav\nr2 r2.wav\n")
    (data / "utt2spk").write_text("r1 s1\nr2 s2\n", encoding="utf-8")
    if segments is not None:
        raw = segments if isinstance(segments, bytes) else segments.encode()
        (data / "segments").write_bytes(raw)
        (data / "utt2spk").write_text("u1 s1\nu2 s2\n", encoding="utf-8")
    return data


def small_model(path: Path, edit: Callable | None = None) -> Path:
    torch.manual_seed(0)
    CPCModel(ModelConfig(encoder_channels=32, context_dim=16)).save_pretrained(path)
    if edit is not None:
        state = load_file(str(path / "model.safetensors"))
        edit(state)
        save_file(state, str(path / "model.safetensors"))
    return path


def codebook(tmp: Path, centroids: torch.Tensor | None = None, **meta) -> Path:
    """A codebook of ``--model random`` c features (K=4); ``meta`` overrides its JSON fields."""
    book = Codebook(
        torch.randn(4, 256) if centroids is None else centroids, "random",
        parameters_sha256(random_model(0)), "c", False,
    )  # fmt: skip
    path = save_codebook(book, tmp / "cb.safetensors")
    if meta:
        values = json.loads(path.with_suffix(".json").read_text())
        values.update(meta)
        path.with_suffix(".json").write_text(json.dumps(values))
    return path


def sharded(tmp: Path, *runs: tuple[str, str, list[str]]) -> list[str]:
    """Run extract once per (output stem, shard, extra args) on three files; the shards' .npy."""
    files = [str(wav(tmp / f"a{i}.wav", 0.3 + 0.1 * i, seed=i)) for i in range(3)]
    outputs = []
    for stem, shard, extra in runs:
        out = tmp / f"{stem}.npy"
        result = CliRunner().invoke(
            app, ["extract", *files, "--out", str(out), "-m", "random", "--shard", shard, *extra]
        )
        assert result.exit_code == 0, result.output
        index, count = shard.split("/")
        outputs.append(str(tmp / f"{stem}.shard-{index}-of-{count}.npy"))
    return outputs


def cpc_audio_run(tmp: Path, args: bytes | None = None) -> Path:
    run = tmp / "run"
    shutil.copytree(CPC_AUDIO / "run_instancenorm_lstm2", run)
    if args is not None:
        (run / "checkpoint_args.json").write_bytes(args)
    return run


def item_file(tmp: Path, rows: list[str]) -> Path:
    path = tmp / "x.item"
    path.write_text("#file onset offset #phone prev-phone next-phone speaker\n" + "\n".join(rows))
    return path


def npy_folder(tmp: Path, objects: bool = False) -> Path:
    folder = tmp / "feats"
    folder.mkdir()
    for k in range(3):
        for spk in ("spk_a", "spk_b"):
            array = np.zeros((20, 8), dtype=np.float32)
            if objects:
                array = np.array([{"a": 1}] * 3, dtype=object)
            np.save(folder / f"{spk}-{k}.npy", array, allow_pickle=objects)
    return folder


# ----- the cases, by command -----


def _extract(tmp: Path, *inputs: str, out: str | None = None, extra: tuple = ()) -> Case:
    target = out or str(tmp / "out" / "f.npy")
    return Case(["extract", *inputs, "--out", target, "-m", "random", *extra], [tmp / "out"])


def _segments(text: str | bytes) -> Callable[[Path], Case]:
    return lambda tmp: _extract(tmp, str(kaldi_dir(tmp, segments=text)))


def _extract_option(*extra: str) -> Callable[[Path], Case]:
    return lambda tmp: _extract(tmp, str(wav(tmp / "a.wav")), extra=extra)


def _ark_same(tmp: Path) -> Case:
    ark = tmp / "out" / "f.ark"
    return _extract(tmp, str(wav(tmp / "a.wav")), out=f"ark,scp:{ark},{ark}")


def _ark_same_dotted(tmp: Path) -> Case:
    (tmp / "out").mkdir()
    os.chdir(tmp / "out")
    case = _extract(tmp, str(wav(tmp / "a.wav")), out="ark,scp:f.ark,./f.ark")
    return Case(case.args, [tmp / "out" / "f.ark"])


def _lhotse_rate_zero(tmp: Path) -> Case:
    pytest.importorskip("lhotse")
    path = wav(tmp / "a.wav")
    recording = {
        "id": "rec", "sampling_rate": 0, "num_samples": 8000, "duration": 0.5,
        "sources": [{"type": "file", "channels": [0], "source": str(path)}],
    }  # fmt: skip
    manifest = tmp / "recordings.jsonl"
    manifest.write_text(json.dumps(recording) + "\n")
    return _extract(tmp, str(manifest))


def _lhotse_torn(tmp: Path) -> Case:
    pytest.importorskip("lhotse")
    manifest = tmp / "cuts.jsonl"
    manifest.write_text('{"id": "c1", "start": 0, "duration": 1, "channel": 0, "recor\n')
    return _extract(tmp, str(manifest))


def _pipe_marker(tmp: Path) -> Case:
    source = wav(tmp / "a.wav")
    scp = tmp / "wav.scp"
    scp.write_text(f"u1 touch {tmp / 'MARKER'}; cat {source} |\n")
    return _extract(tmp, str(scp))


def _lhotse_marker(kind: str, prefix: str = "") -> Callable[[Path], Case]:
    """A lhotse recording whose source (of type ``kind``) would leave a marker if it ran."""

    def build(tmp: Path) -> Case:
        pytest.importorskip("lhotse")
        source = wav(tmp / "a.wav")
        recording = {
            "id": "rec", "sampling_rate": 16000, "num_samples": 8000, "duration": 0.5,
            "sources": [{"type": kind, "channels": [0],
                         "source": f"{prefix}touch {tmp / 'MARKER'}; cat {source}"}],
        }  # fmt: skip
        manifest = tmp / "recordings.jsonl"
        manifest.write_text(json.dumps(recording) + "\n")
        return _extract(tmp, str(manifest))

    return build


def _model_nan(tmp: Path) -> Case:
    model = small_model(tmp / "m", lambda s: s["context.weight_hh_l0"].fill_(float("nan")))
    return Case(
        ["extract", str(wav(tmp / "a.wav")), "--out", str(tmp / "out" / "f.npy"), "-m", str(model)],
        [tmp / "out"],
    )


def _model_config(raw: bytes) -> Callable[[Path], Case]:
    def build(tmp: Path) -> Case:
        model = small_model(tmp / "m")
        (model / "config.json").write_bytes(raw)
        out = tmp / "out" / "f.npy"
        return Case(["extract", str(wav(tmp / "a.wav")), "--out", str(out), "-m", str(model)],
                    [tmp / "out"])  # fmt: skip

    return build


def _merge(*runs: tuple[str, str, list[str]], edit: Callable | None = None):
    def build(tmp: Path) -> Case:
        outputs = sharded(tmp, *runs)
        if edit is not None:
            edit(Path(outputs[0]).with_name(Path(outputs[0]).stem + ".index.tsv"))
        merged = tmp / "m.index.tsv"
        return Case(["merge-index", *outputs, "--out", str(merged)], [merged])

    return build


def _drop_run_line(index: Path) -> None:
    index.write_text("".join(index.read_text().splitlines(keepends=True)[1:]))


def _units_fit(*extra: str, corpus: Callable | None = None) -> Callable[[Path], Case]:
    def build(tmp: Path) -> Case:
        data = tone_corpus(tmp / "data")
        if corpus is not None:
            corpus(data)
        out = tmp / "out" / "cb"
        return Case(
            ["units", "fit", "--data", str(data), "-m", "random", "--k", "4", "--out", str(out),
             "-q", *extra], [tmp / "out"],
        )  # fmt: skip

    return build


def _units_apply(make_book: Callable[[Path], Path], dup: bool = False) -> Callable:
    def build(tmp: Path) -> Case:
        inputs = [str(wav(tmp / "x" / "a.wav"))]
        if dup:
            inputs.append(str(wav(tmp / "y" / "a.wav", seed=1)))
        out = tmp / "out" / "units.txt"
        book = make_book(tmp)
        return Case(["units", "apply", *inputs, "-c", str(book), "--out", str(out), "-q"],
                    [tmp / "out"])  # fmt: skip

    return build


def _torn_json(tmp: Path) -> Path:
    path = codebook(tmp)
    meta = path.with_suffix(".json")
    meta.write_text(meta.read_text()[:40])
    return path


def _json_value(value: object) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        path = codebook(tmp)
        path.with_suffix(".json").write_text(json.dumps(value))
        return path

    return make


def _corrupt_safetensors(tmp: Path) -> Path:
    path = codebook(tmp)
    raw = path.read_bytes()
    path.write_bytes(struct.pack("<Q", 10**9) + raw[8:40])
    return path


def _abx(*extra: str, items: list[str] | None = None, corpus: Callable | None = None):
    def build(tmp: Path) -> Case:
        data = tone_corpus(tmp / "data")
        if corpus is not None:
            corpus(data)
        args = ["abx", "--data", str(data), "-m", "mfcc", "--out", str(tmp / "out"), "-q"]
        if items is not None:
            args += ["--item", str(item_file(tmp, items))]
        else:
            args += ["--labels", str(data / "labels.txt")]
        return Case([*args, *extra], [tmp / "out"])

    return build


def _abx_item_bytes(tmp: Path) -> Case:
    case = _abx(items=["spk_a-0 0.1 0.2 AA S M spk_a"])(tmp)
    (tmp / "x.item").write_bytes(b"#file onset\nspk_a-0 0.1 0.2 AA S M spk\xe9\n")
    return case


def _probe(*extra: str, corpus: Callable | None = None) -> Callable[[Path], Case]:
    def build(tmp: Path) -> Case:
        data = tone_corpus(tmp / "data")
        if corpus is not None:
            corpus(data)
        return Case(
            ["probe", "phone", "--data", str(data), "--labels", str(data / "labels.txt"),
             "-m", "mfcc", "--out", str(tmp / "out"), "-q", *extra], [tmp / "out"],
        )  # fmt: skip

    return build


def _tsne(*extra: str, model: Callable | None = None, out: str = "out/t.png") -> Callable:
    def build(tmp: Path) -> Case:
        data = tone_corpus(tmp / "data")
        spec = str(model(tmp)) if model is not None else "mfcc"
        return Case(
            ["tsne", "--data", str(data), "-m", spec, "--out", str(tmp / out), *extra],
            [tmp / "out"],
        )

    return build


def _convert(make_run: Callable[[Path], Path]) -> Callable[[Path], Case]:
    def build(tmp: Path) -> Case:
        return Case(["convert", str(make_run(tmp)), str(tmp / "out")], [tmp / "out"])

    return build


def _nan_release(tmp: Path) -> Path:
    data = torch.load(CPC_AUDIO / "release_id_rnn3.pt", weights_only=True)
    data["weights"]["gEncoder.conv0.weight"][0, 0, 0] = float("inf")
    torch.save(data, tmp / "nan.pt")
    return tmp / "nan.pt"


def _convert_onto_itself(tmp: Path) -> Case:
    run = cpc_audio_run(tmp)
    return Case(["convert", str(run), str(run), "--overwrite"], [])


def _export(make_source: Callable[[Path], Path], *extra: str, onto_source: bool = False):
    def build(tmp: Path) -> Case:
        source = make_source(tmp)
        out = source if onto_source else tmp / "out"
        return Case(["export", str(source), str(out), *extra], [] if onto_source else [out])

    return build


def _train(text: bytes | None, *sets: str) -> Callable[[Path], Case]:
    def build(tmp: Path) -> Case:
        conf = SMOKE
        if text is not None:
            conf = tmp / "conf.yaml"
            conf.write_bytes(text)
        run = tmp / "run"
        return Case(["train", str(conf), "--set", f"data.root={tmp}", "--set",
                     f"train.out_dir={run}", *(a for s in sets for a in ("--set", s))],
                    [run])  # fmt: skip

    return build


def _plot_steps(name: str, raw: bytes) -> Callable[[Path], Case]:
    def build(tmp: Path) -> Case:
        (tmp / "run").mkdir()
        (tmp / "run" / name).write_bytes(raw)
        out = tmp / "out" / "s.png"
        return Case(["plot-steps", str(tmp / "run" / name), "--out", str(out)], [tmp / "out"])

    return build


def _cache(tmp: Path) -> dict[str, str]:
    """No network: the Hub offline, published checkpoints from a closed local port."""
    return {
        "CPCSPEECH_CACHE": str(tmp / "cache"),
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp / "hf"),
        "CPCSPEECH_CHECKPOINT_URL": "http://127.0.0.1:9/",
    }


def _download(spec: str) -> Callable[[Path], Case]:
    return lambda tmp: Case(["download", spec], [tmp / "cache", tmp / "hf"], _cache(tmp))


def _download_cache_is_a_file(tmp: Path) -> Case:
    (tmp / "cache").write_text("a file, not a folder")
    return Case(["download", "librilight-600h"], [tmp / "hf"], _cache(tmp))


def _cut_wav_scp(data: Path) -> None:
    (data / "wav.scp").write_bytes(b"spk_a-0 wavs/spk_a-0.wav\n\xff\xfe\n")


def _cut_utt2spk(data: Path) -> None:
    (data / "utt2spk").write_bytes((data / "utt2spk").read_bytes() + b"x \xe9\n")


def _pipe_in_wav_scp(data: Path) -> None:
    """A corpus whose wav.scp pipes one utterance through a command that leaves a marker."""
    lines = (data / "wav.scp").read_text(encoding="utf-8").splitlines()
    first, path = lines[0].split(maxsplit=1)
    lines[0] = f"{first} touch {data.parent / 'MARKER'}; cat {data / path} |"
    (data / "wav.scp").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _bad_labels(data: Path) -> None:
    (data / "labels.txt").write_bytes(b"spk_a-0 1 2 \xff\n")


CASES = [
    # extract: outputs, Kaldi segments and tables, lhotse, options, models
    ("extract-ark-scp-same-path", _ark_same),
    ("extract-ark-scp-same-file-two-spellings", _ark_same_dotted),
    ("extract-segments-inf-end", _segments("u1 r1 0 inf\n")),
    ("extract-segments-nan-start", _segments("u1 r1 nan 0.5\n")),
    ("extract-segments-inf-start-to-end", _segments("u1 r1 inf -1\n")),
    ("extract-segments-negative-start", _segments("u1 r1 -0.5 0.5\n")),
    ("extract-segments-end-before-start", _segments("u1 r1 0.6 0.5\n")),
    ("extract-segments-not-utf8", _segments(b"u1 r1 0 0.5\nu2 r\xff 0 0.5\n")),
    (
        "extract-wav-scp-not-utf8",
        lambda t: _extract(t, str(kaldi_dir(t, wav_scp=b"r1 \xe9.wav\n"))),
    ),
    ("extract-lhotse-rate-zero", _lhotse_rate_zero),
    ("extract-lhotse-torn-manifest", _lhotse_torn),
    ("extract-chunk-seconds-negative", _extract_option("--chunk-seconds", "-1")),
    ("extract-chunk-seconds-nan", _extract_option("--chunk-seconds", "nan")),
    ("extract-batch-seconds-negative", _extract_option("--batch-seconds", "-5")),
    ("extract-shard-out-of-range", _extract_option("--shard", "2/2")),
    ("extract-shard-garbage", _extract_option("--shard", "1/x")),
    ("extract-layer-unknown", _extract_option("--layer", "q")),
    ("extract-precision-unknown", _extract_option("--precision", "fp8")),
    ("extract-seed-negative", _extract_option("--seed", "-1")),
    ("extract-missing-input", lambda t: _extract(t, str(t / "nope.wav"))),
    ("extract-npy-as-audio", lambda t: _extract(t, str(npy_folder(t) / "spk_a-0.npy"))),
    ("extract-out-not-npy", lambda t: _extract(t, str(wav(t / "a.wav")), out=str(t / "o.txt"))),
    ("extract-model-nan-weights", _model_nan),
    ("extract-model-config-torn", _model_config(b'{"model_type": "cpc", "encoder_chan')),
    ("extract-model-config-not-utf8", _model_config(b'{"model_type": "\xff"}')),
    ("extract-model-config-a-list", _model_config(b"[1, 2]")),
    ("extract-wav-scp-pipe-runs", _pipe_marker),
    ("extract-lhotse-command-source", _lhotse_marker("command")),
    ("extract-lhotse-url-pipe-source", _lhotse_marker("url", "pipe:")),
    ("probe-wav-scp-pipe-runs", _probe(corpus=_pipe_in_wav_scp)),
    ("abx-wav-scp-pipe-runs", _abx(corpus=_pipe_in_wav_scp)),
    ("units-fit-wav-scp-pipe-runs", _units_fit(corpus=_pipe_in_wav_scp)),
    # merge-index: incomplete and mixed runs
    ("merge-index-shard-1-of-2-alone", _merge(("f", "1/2", []))),
    ("merge-index-different-models", _merge(("f", "0/2", []), ("g", "1/2", ["--seed", "1"]))),
    ("merge-index-different-layers", _merge(("f", "0/2", []), ("g", "1/2", ["--layer", "z"]))),
    ("merge-index-different-shard-counts", _merge(("f", "0/2", []), ("g", "1/3", []))),
    ("merge-index-duplicate", _merge(("f", "0/2", []), ("f", "0/2", []))),
    ("merge-index-old-index", _merge(("f", "0/1", []), edit=_drop_run_line)),
    (
        "merge-index-unsharded",
        lambda t: (
            Case(
                ["merge-index", str(t / "p.npy"), "--out", str(t / "m.index.tsv")],
                [t / "m.index.tsv"],
            )
            if CliRunner()
            .invoke(
                app, ["extract", str(wav(t / "a.wav")), "--out", str(t / "p.npy"), "-m", "random"]
            )
            .exit_code
            == 0
            else None
        ),
    ),  # fmt: skip
    (
        "merge-index-nothing-there",
        lambda t: Case(
            ["merge-index", str(t / "none.npy"), "--out", str(t / "m.index.tsv")],
            [t / "m.index.tsv"],
        ),
    ),  # fmt: skip
    # units fit
    ("units-fit-max-frames-negative", _units_fit("--max-frames", "-5")),
    ("units-fit-k-one", _units_fit("--k", "1")),
    ("units-fit-seed-negative", _units_fit("--seed", "-3")),
    ("units-fit-method-unknown", _units_fit("--method", "faiss")),
    ("units-fit-wav-scp-not-utf8", _units_fit(corpus=_cut_wav_scp)),
    ("units-fit-utt2spk-not-utf8", _units_fit(corpus=_cut_utt2spk)),
    # units apply: codebooks and keys
    ("units-apply-duplicate-keys", _units_apply(codebook, dup=True)),
    (
        "units-apply-nan-centroids",
        _units_apply(lambda t: codebook(t, torch.full((4, 256), float("nan")))),
    ),
    (
        "units-apply-inf-centroid",
        _units_apply(
            lambda t: codebook(
                t, torch.ones(4, 256).index_fill_(0, torch.tensor([2]), float("inf"))
            )
        ),
    ),
    ("units-apply-shape-mismatch", _units_apply(lambda t: codebook(t, k=5))),
    ("units-apply-torn-json", _units_apply(_torn_json)),
    ("units-apply-json-a-list", _units_apply(_json_value([1, 2]))),
    ("units-apply-json-k-a-string", _units_apply(lambda t: codebook(t, k="4"))),
    (
        "units-apply-json-missing-field",
        _units_apply(_json_value({"format": "cpcspeech-units", "format_version": 1})),
    ),
    ("units-apply-corrupt-safetensors", _units_apply(_corrupt_safetensors)),
    ("units-apply-no-codebook", _units_apply(lambda t: t / "none.safetensors")),
    # abx
    ("abx-max-per-group-negative", _abx("--max-per-group", "-1")),
    ("abx-seed-negative", _abx("--seed", "-2")),
    ("abx-distance-unknown", _abx("--distance", "cosine2")),
    ("abx-item-inf-onset", _abx(items=["spk_a-0 inf 0.2 AA S M spk_a"])),
    ("abx-item-nan-offset", _abx(items=["spk_a-0 0.1 nan AA S M spk_a"])),
    ("abx-item-negative", _abx(items=["spk_a-0 -0.1 0.2 AA S M spk_a"])),
    ("abx-item-all-reversed", _abx(items=["spk_a-0 0.3 0.2 AA S M spk_a"] * 3)),
    ("abx-item-not-utf8", _abx_item_bytes),
    ("abx-no-scorable-cell", _abx(items=["spk_a-0 0.1 0.3 AA S M spk_a"])),
    ("abx-labels-not-utf8", _abx(corpus=_bad_labels)),
    # probe
    ("probe-epochs-zero", _probe("--epochs", "0")),
    ("probe-hidden-negative", _probe("--hidden", "-1")),
    ("probe-seed-negative", _probe("--seed", "-1")),
    ("probe-speaker-mode-unknown", _probe("--speaker-mode", "x")),
    ("probe-train-list-not-utf8", lambda t: _probe_list(t)),
    # tsne
    ("tsne-speakers-zero", _tsne("--speakers", "0")),
    ("tsne-utts-per-speaker-negative", _tsne("--utts-per-speaker", "-1")),
    ("tsne-perplexity-negative", _tsne("--perplexity", "-1")),
    ("tsne-out-not-png", _tsne(out="out/t.jpg")),
    ("tsne-npy-of-python-objects", _tsne(model=lambda t: npy_folder(t, objects=True))),
    # convert
    ("convert-non-finite-weights", _convert(_nan_release)),
    ("convert-args-not-utf8", _convert(lambda t: cpc_audio_run(t, b'{"hiddenGar": \xff}'))),
    ("convert-args-torn", _convert(lambda t: cpc_audio_run(t, b'{"hiddenGar": 16, "nLev'))),
    ("convert-args-a-list", _convert(lambda t: cpc_audio_run(t, b"[16, 2]"))),
    ("convert-missing", _convert(lambda t: t / "nothing.pt")),
    ("convert-onto-its-own-run", _convert_onto_itself),
    # export
    ("export-missing", _export(lambda t: t / "nothing")),
    ("export-config-torn", _export(lambda t: _torn_model(t))),
    (
        "export-onto-its-own-source",
        _export(lambda t: small_model(t / "m"), "--overwrite", onto_source=True),
    ),  # fmt: skip
    # train
    ("train-conf-not-utf8", _train(b"data:\n  root: \xff\n")),
    ("train-conf-torn", _train(b"model:\n  norm: [channel\n")),
    ("train-lr-negative", _train(None, "optim.lr=-1")),
    ("train-steps-inf", _train(None, "train.max_steps=1e400")),
    # plot-steps
    ("plot-steps-torn-jsonl", _plot_steps("log.jsonl", b'{"step": 1, "acc')),
    ("plot-steps-meta-not-utf8", _plot_steps("meta.json", b'{"a": "\xff"}')),
    # download, models
    ("download-bad-repo-id", _download("a/b/c/d")),
    ("download-unknown-name", _download("no-such-model")),
    ("download-cache-is-a-file", _download_cache_is_a_file),
    ("models-unknown-option", lambda t: Case(["models", "--all"], [])),
    ("extract-option-not-a-number", _extract_option("--chunk-seconds", "abc")),
    ("units-fit-k-not-a-number", _units_fit("--k", "ten")),
]


def _torn_model(tmp: Path) -> Path:
    model = small_model(tmp / "m")
    (model / "config.json").write_text('{"model_type": "cpcspee')
    return model


def _probe_list(tmp: Path) -> Case:
    case = _probe()(tmp)
    (tmp / "train.txt").write_bytes(b"spk_a-0\nspk_\xe9\n")
    return Case([*case.args, "--train-list", str(tmp / "train.txt")], case.absent)


def _param(entry):
    if hasattr(entry, "marks"):  # already a pytest.param (a class of the other branch)
        return pytest.param(*entry.values, marks=entry.marks, id=entry.values[0])
    return pytest.param(*entry, id=entry[0])


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.mark.parametrize(("name", "build"), [_param(c) for c in CASES])
def test_hostile_input_is_one_line_and_leaves_nothing(name, build, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    case = build(tmp_path)
    assert case is not None, f"{name}: the case could not be built"
    before = _files(tmp_path)
    result = CliRunner().invoke(app, case.args, env={"COLUMNS": "300", **case.env})
    stderr = result.stderr.splitlines()
    assert result.exit_code not in (0, None), (result.exit_code, result.output)
    assert "Traceback" not in result.output and not isinstance(result.exception, Exception)
    assert len(stderr) == 1 and stderr[0].startswith("error: "), result.output
    assert "internal error" not in stderr[0], stderr[0]
    assert not (tmp_path / "MARKER").exists(), "a command in a data file ran"
    for path in case.absent:  # an empty output folder made by the location check is allowed
        left = [path] if path.is_file() else [p for p in path.rglob("*") if not p.is_dir()]
        assert not left, f"{left} left behind"
    new = _files(tmp_path) - before
    assert not [p for p in new if ".tmp" in p.name or p.name.startswith(".")], sorted(new)
