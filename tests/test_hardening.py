"""Bad input through the CLI, as a user would give it: exit 2, one line naming the problem, nothing
left behind. One test per case of issue 11, and the cases found while probing every command."""

import json
import os
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from paths import EXAMPLE_AUDIO, REPO
from safetensors.torch import load_file, save_file
from samples import make_tiny_model, noise
from typer.testing import CliRunner

from cpcspeech.cli import app
from cpcspeech.io.index import read_index

SMOKE = REPO / "recipes" / "smoke" / "conf.yaml"
runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, list(args))


def assert_one_line_error(result, *fragments: str) -> str:
    """Exit 2, no traceback, exactly one 'error:' line holding every fragment; returns it."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# ----- item 6 and 7: configs -----


def _conf(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("optim.lr=-1", ["optim.lr must be in (0, 10]", "found -1.0"]),
        ("optim.lr=.nan", ["optim.lr must be in (0, 10]", "found nan"]),
        ("train.max_steps=0", ["train.max_steps must be in [1, 1000000000]", "found 0"]),
        ("train.max_steps=-5", ["train.max_steps", "found -5"]),
        ("train.log_every=0", ["train.log_every must be in [1, ", "found 0"]),
        ("train.max_steps=1e400", ["train.max_steps: expected int", "1e400"]),
        ("optim.betas=[0.9,1.5]", ["optim.betas must be in [0, 1) (each value)", "found 1.5"]),
        ("model.encoder_strides=[5,0,2,2,2]", ["model.encoder_strides must be in [1, 1024]"]),
        ("model.encoder_kernels=[10,-8,4,4,4]", ["model.encoder_kernels", "found -8"]),
        ("data.window=0", ["data.window must be in [1, ", "found 0"]),
        ("data.seed=-1", ["data.seed must be in [0, ", "found -1"]),
    ],
)
def test_out_of_range_settings_are_refused_at_load(tmp_path, override, fragments):
    run = tmp_path / "run"
    result = cli("train", str(SMOKE), "--set", f"data.root={tmp_path}", "--set", override,
                 "--set", f"train.out_dir={run}")  # fmt: skip
    assert_one_line_error(result, *fragments)
    assert not run.exists()


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("loss.prediction_steps=20", ["data.window = 2560 samples gives 16 frame(s)",
                                      "loss.prediction_steps = 20", "must be >= 3359"]),
        ("data.window=100", ["data.window = 100 samples gives 0 frame(s)"]),
    ],
)  # fmt: skip
def test_window_too_short_for_the_prediction_steps_fails_before_the_run_folder(
    tmp_path, override, fragments
):
    run = tmp_path / "run"
    result = cli("train", str(SMOKE), "--set", f"data.root={tmp_path}", "--set", override,
                 "--set", f"train.out_dir={run}")  # fmt: skip
    assert_one_line_error(result, *fragments)
    assert not run.exists()


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("- model\n- data\n", ["expected a mapping of sections, found list"]),
        ("42\n", ["expected a mapping of sections, found int 42"]),
        ("model: 3\n", ["config section 'model': expected a mapping of keys, found int 3"]),
        ("model:\n  norm: [channel\n", ["conf.yaml:", "expected valid YAML"]),
        ("data:\n\troot: x\n", ["conf.yaml:2: expected valid YAML"]),
        ("\xff\xfe", []),
    ],
)
def test_yaml_that_is_not_a_config_is_one_line(tmp_path, text, fragments):
    path = tmp_path / "conf.yaml"
    if text == "\xff\xfe":
        path.write_bytes(b"\xff\xfemodel: 1\n")
        fragments = ["expected UTF-8 text, found byte 0xff"]
    else:
        path.write_text(text, encoding="utf-8")
    assert_one_line_error(cli("train", str(path)), *fragments)


def test_bad_set_value_yaml_is_one_line(tmp_path):
    result = cli("train", str(SMOKE), "--set", "data.root=[a")
    assert_one_line_error(result, "--set 'data.root=[a'", "not valid YAML")


def test_every_numeric_field_has_a_range_that_holds_its_default():
    import dataclasses
    import typing

    from cpcspeech.config import RANGES, Config

    for section in dataclasses.fields(Config):
        cls = typing.get_type_hints(Config)[section.name]
        hints = typing.get_type_hints(cls)
        default = cls() if section.name != "data" else cls(root="/d")
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            args = typing.get_args(tp)
            numeric = tp in (int, float) or (args and args[0] in (int, float))
            if numeric:
                assert f.name in RANGES[cls.__name__], f"{section.name}.{f.name} has no range"
                RANGES[cls.__name__][f.name].check(f.name, getattr(default, f.name))


# ----- items 1 and 2: model directories -----


def small_model_dir(path: Path, edit=None) -> Path:
    """A saved CPCModel (32 channels, 16-d context); ``edit(state)`` changes its tensors."""
    model = make_tiny_model(0, encoder_channels=32, context_dim=16)
    model.save_pretrained(path)
    if edit is not None:
        state = load_file(str(path / "model.safetensors"))
        edit(state)
        save_file(state, str(path / "model.safetensors"))
    return path


def _edit_config(path: Path, **values) -> None:
    meta = json.loads((path / "config.json").read_text())
    meta.update(values)
    (path / "config.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("values", "fragments"),
    [
        ({"encoder_channels": 10**7}, ["model.encoder_channels must be in [1, 4096]", "10000000"]),
        ({"context_layers": 1000}, ["context_layers must be in [1, 32]; found 1000"]),
        ({"encoder_kernels": [10, 0, 4, 4, 4]}, ["encoder_kernels must be in [1, 1024]"]),
        ({"encoder_strides": [5, -4, 2, 2, 2]}, ["encoder_strides", "found -4"]),
        # In range, but not what the weights hold: refused from the header, before allocating.
        (
            {"encoder_channels": 4096},
            ["encoder.convs.0.weight expected shape (4096, 1, 10)", "(32, 1, 10)"],
        ),
        ({"context_layers": 32}, ["missing ['context.bias_hh_l1', ", "and 120 more]"]),
    ],
)
def test_model_config_is_checked_against_bounds_and_header_in_well_under_a_second(
    tmp_path, values, fragments
):
    model_dir = small_model_dir(tmp_path / "m")
    _edit_config(model_dir, **values)
    wav = noise(tmp_path / "a.wav")
    start = time.perf_counter()
    result = cli("extract", str(wav), "--out", str(tmp_path / "f.npy"), "--model", str(model_dir))
    seconds = time.perf_counter() - start
    line = assert_one_line_error(result, *fragments)
    assert len(line) < 400 and seconds < 1.0, (len(line), seconds)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "m"]


def test_header_promising_more_data_than_the_file_holds(tmp_path):
    model_dir = small_model_dir(tmp_path / "m")
    weights = model_dir / "model.safetensors"
    raw = weights.read_bytes()
    length = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + length])
    header["encoder.convs.0.bias"]["data_offsets"][1] += 10**12  # a 1 TB tensor in a small file
    text = json.dumps(header).encode()
    weights.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + length :])
    result = cli("export", str(model_dir), str(tmp_path / "out"))
    assert_one_line_error(result, "not a valid safetensors file", "encoder.convs.0.bias")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["extract", "export"])
def test_nan_weights_are_refused_on_load(tmp_path, command):
    def poison(state):
        state["encoder.convs.2.weight"][0, 0, 0] = float("nan")
        state["context.weight_hh_l0"][1, 1] = float("inf")

    model_dir = small_model_dir(tmp_path / "m", poison)
    wav = noise(tmp_path / "a.wav")
    if command == "extract":
        result = cli("extract", str(wav), "--out", str(tmp_path / "f.npy"), "-m", str(model_dir))
    else:
        result = cli("export", str(model_dir), str(tmp_path / "out"))
    assert_one_line_error(
        result, "expected finite weights, found 2 NaN/inf value(s) in 2 tensor(s)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "m"]


def test_features_that_overflow_stop_extraction(tmp_path):
    model_dir = small_model_dir(
        tmp_path / "m",
        lambda state: [state[f"encoder.convs.{i}.weight"].fill_(3e38) for i in (0, 1)],
    )
    wav = noise(tmp_path / "a.wav")
    out = tmp_path / "run"
    out.mkdir()
    result = cli("extract", str(wav), "--out", str(out / "f.npy"), "-m", str(model_dir),
                 "--layer", "z")  # fmt: skip
    assert_one_line_error(result, "a.wav: expected finite features, the model gave")
    assert list(out.iterdir()) == []


# ----- item 3: truncated audio -----


def test_truncated_wav_is_an_audio_error_and_skippable(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    noise(audio / "a.wav", seconds=1.0)
    full = noise(tmp_path / "b.wav", seconds=1.0, seed=1).read_bytes()
    (audio / "b.wav").write_bytes(full[: len(full) // 2])  # header still says 16000 frames
    result = cli("extract", str(audio), "--out", str(tmp_path / "f.npy"), "--model", "random")
    assert_one_line_error(
        result, "b.wav: truncated: the WAV header promises 16000 frames (32000 bytes)"
    )
    assert not (tmp_path / "f.npy").exists()
    result = cli("extract", str(audio), "--out", str(tmp_path / "f.npy"), "--model", "random",
                 "--skip-errors")  # fmt: skip
    assert result.exit_code == 1, result.output
    rows = read_index(tmp_path / "f.index.tsv")
    assert [r["status"].split(":")[0] for r in rows] == ["ok", "skipped"]
    assert "truncated" in rows[1]["status"]
    assert np.load(tmp_path / "f.npy").shape == (100, 256)


def test_wav_header_with_a_1_hz_rate_is_refused_before_resampling(tmp_path):
    """Before: 1 s of audio labelled 1 Hz resampled to 16000 x as many samples (256 M floats)."""
    raw = bytearray(noise(tmp_path / "a.wav", seconds=1.0).read_bytes())
    raw[24:28] = (1).to_bytes(4, "little")  # fmt chunk: sample rate
    (tmp_path / "a.wav").write_bytes(bytes(raw))
    result = cli("extract", str(tmp_path / "a.wav"), "--out", str(tmp_path / "f.npy"),
                 "--model", "random")  # fmt: skip
    assert_one_line_error(result, "a.wav: sample rate 1 Hz in the header, expected 1000 to 768000")


# ----- item 4 and 7: corrupt checkpoints -----


def _smoke_run(tmp_path: Path, *extra: str):
    audio = tmp_path / "audio"
    for s in range(2):
        (audio / f"spk{s}").mkdir(parents=True)
        for u in range(2):
            noise(audio / f"spk{s}" / f"s{s}u{u}.wav", seconds=0.4, seed=10 * s + u)
    run = tmp_path / "run"
    sets = [f"data.root={audio}", f"train.out_dir={run}", "train.checkpoint_every=2", *extra]
    args = ["train", str(SMOKE)] + [a for s in sets for a in ("--set", s)]
    return run, args


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("model.safetensors", lambda raw: raw[: len(raw) // 2]),
        ("config.yaml", lambda raw: raw[: len(raw) // 3]),
        ("trainer.pt", lambda raw: raw[:100] + bytes(50) + raw[150:]),
    ],
)
def test_resume_skips_a_corrupt_newest_checkpoint(tmp_path, name, damage):
    run, args = _smoke_run(tmp_path)
    result = cli(*args, "--set", "train.max_steps=4")
    assert result.exit_code == 0, result.output
    meta = json.loads((run / "checkpoints" / "step-00000004" / "meta.json").read_text())
    assert set(meta["sha256"]) >= {"model.safetensors", "trainer.pt", "config.yaml"}
    bad = run / "checkpoints" / "step-00000004" / name
    bad.write_bytes(damage(bad.read_bytes()))
    result = cli(*args, "--set", "train.max_steps=6", "--resume")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"checkpoint step-00000004: {name} sha256 expected" in text
    assert "moved aside to step-00000004.corrupt" in text
    assert "resuming from step-00000002" in text
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "step-00000004.corrupt" in names and "step-00000006" in names


def test_resume_with_no_checkpoint_that_verifies_is_one_line(tmp_path):
    run, args = _smoke_run(tmp_path)
    assert cli(*args, "--set", "train.max_steps=2").exit_code == 0
    (run / "checkpoints" / "step-00000002" / "meta.json").write_text("{truncated")
    result = cli(*args, "--set", "train.max_steps=4", "--resume")
    assert_one_line_error(result, "cannot resume: none of the 1 checkpoint(s)", "verifies")
    assert (run / "checkpoints" / "step-00000002.corrupt").is_dir()


# ----- item 5: phone tables -----


def _kaldi_dir(root: Path) -> Path:
    root.mkdir(parents=True)
    for utt in ("u1", "u2"):
        noise(root / f"{utt}.wav", seconds=0.3)
    (root / "wav.scp").write_text("u1 u1.wav\nu2 u2.wav\n")
    (root / "utt2spk").write_text("u1 a\nu2 b\n")
    (root / "train_split.txt").write_text("u1\n")
    (root / "test_split.txt").write_text("u2\n")
    (root / "labels.txt").write_text("u1 " + "1 " * 28 + "\nu2 " + "2 " * 28 + "\n")
    return root


def test_duplicate_phone_ids_name_both_symbols(tmp_path):
    data = _kaldi_dir(tmp_path / "data")
    (data / "phones.txt").write_text("SIL 0\nAA 1\nAE 2\nAH 1\n")
    result = cli("probe", "phone", "--data", str(data), "--labels", str(data / "labels.txt"),
                 "--model", "mfcc", "--quiet")  # fmt: skip
    assert_one_line_error(
        result, "phones.txt:4: id 1 given to 'AH', but line 2 already gives it to 'AA'"
    )


# ----- items 8 and 9: the index and file modes -----


def test_index_escapes_tabs_newlines_and_backslashes_and_round_trips(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    names = ["tab\there.wav", "new\nline.wav", "back\\slash.wav", "plain.wav", "bad\udcffutf8.wav"]
    for i, name in enumerate(names):
        rng = np.random.default_rng(i)
        data = rng.normal(0, 0.1, int(16000 * (0.3 + 0.1 * i))).astype(np.float32)
        sf.write(os.fsencode(audio / name), data, 16000)  # bytes: the last name is not UTF-8
    out = tmp_path / "f.npy"
    result = cli("extract", str(audio), "--out", str(out), "--model", "random")
    assert result.exit_code == 0, result.output
    text = (tmp_path / "f.index.tsv").read_bytes()
    assert text.count(b"\n") == 1 + len(names) and b"tab\\there" in text and b"new\\nline" in text
    rows = read_index(tmp_path / "f.index.tsv")
    assert sorted(Path(r["path"]).name for r in rows) == sorted(names)
    feats = np.load(out)
    for row in rows:
        first, count = int(row["first_row"]), int(row["num_frames"])
        assert count == (len(sf.read(os.fsencode(row["path"]))[0]) + 1) // 160
        assert feats[first : first + count].shape == (count, 256)
    assert {r["id"] for r in rows} == {n[:-4] for n in names}


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_respect_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        wav = noise(tmp_path / "a.wav")
        assert (
            cli("extract", str(wav), "--out", str(tmp_path / "f.npy"), "-m", "random").exit_code
            == 0
        )
        assert (
            cli("extract", str(wav), "--out", str(tmp_path / "dir") + "/", "-m", "random").exit_code
            == 0
        )
        run, args = _smoke_run(tmp_path)
        assert cli(*args, "--set", "train.max_steps=2").exit_code == 0
        ckpt = run / "checkpoints" / "step-00000002"
        assert cli("export", str(ckpt), str(tmp_path / "exported")).exit_code == 0
    finally:
        os.umask(old)
    files = [tmp_path / "f.npy", tmp_path / "f.index.tsv", tmp_path / "dir" / "a.npy",
             run / "log.jsonl", run / "log.csv", run / "config.yaml",
             *ckpt.iterdir(), *(tmp_path / "exported").iterdir()]  # fmt: skip
    folders = [ckpt, tmp_path / "exported"]
    for path in files:
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
    for path in folders:
        assert path.stat().st_mode & 0o777 == 0o777 & ~umask, path


# ----- item 7: options and outputs -----


@pytest.mark.parametrize("value", ["inf", "nan", "0", "-1"])
def test_chunk_seconds_must_be_finite_and_positive(tmp_path, value):
    wav = noise(tmp_path / "a.wav")
    result = cli("extract", str(wav), "--out", str(tmp_path / "o" / "f.npy"), "-m", "random",
                 "--chunk-seconds", value)  # fmt: skip
    assert_one_line_error(result, "--chunk-seconds: expected a finite number > 0, found")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("out", ["file.txt/x.npy", "file.txt/sub/"])
def test_out_through_an_existing_file(tmp_path, out):
    wav = noise(tmp_path / "a.wav")
    (tmp_path / "file.txt").write_text("not a folder")
    result = cli("extract", str(wav), "--out", f"{tmp_path}/{out}", "-m", "random")
    assert_one_line_error(result, "cannot write in", "file.txt is a file, expected a folder")


def test_unwritable_output_folder_fails_before_any_features(tmp_path):
    wav = noise(tmp_path / "a.wav")
    if os.geteuid() == 0:  # root writes anywhere permissions allow; /proc/self takes no files
        folder = Path("/proc/self")
    else:
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(0o555)
    start = time.perf_counter()
    result = cli("extract", str(wav), "--out", str(folder / "f.npy"), "-m", "random")
    assert_one_line_error(result, f"cannot write in {folder} (")
    assert "weights:" in result.output and "speed:" not in result.output
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("org/name@a b", "revision 'a b' is not a branch, tag or commit name"),
        ("org/name@v1;rm", "revision 'v1;rm' is not"),
        ("org/name@../x", "revision '../x' is not"),
        ("org/name@-x", "revision '-x' is not"),
    ],
)
def test_malformed_hub_revisions_fail_before_the_network(monkeypatch, spec, fragment):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a request would fail differently
    assert_one_line_error(cli("download", spec), fragment)


# ----- beyond the list: probe, tsne, plot-steps -----


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--epochs", "0"], "--epochs: expected >= 1, found 0"),
        (["--hidden", "-5"], "--hidden: expected 0 (linear) or a width >= 1, found -5"),
        (["--layer", "q"], "--layer: expected c, z or c1..cN, found 'q'"),
        (["--device", "tpu"], "device: expected auto, cpu, cuda or cuda:N, found 'tpu'"),
        (["--out", "file.txt/x"], "file.txt is a file, expected a folder"),
        (["--table", "--supervised-steps", "-4"], "supervised steps: expected >= 1, found -4"),
        (["--table", "--out", "file.txt"], "file.txt is a file, expected a folder"),
    ],
)
def test_probe_options_are_checked_before_any_work(tmp_path, extra, fragment):
    data = _kaldi_dir(tmp_path / "data")
    (data / "phones.txt").write_text("SIL 0\nAA 1\nAE 2\n")
    (tmp_path / "file.txt").write_text("not a folder")
    extra = [str(tmp_path / e) if e.startswith("file.txt") else e for e in extra]
    task = [] if "--table" in extra else ["phone"]
    result = cli("probe", *task, "--data", str(data), "--labels", str(data / "labels.txt"),
                 "--model", "mfcc", "--quiet", *extra)  # fmt: skip
    assert_one_line_error(result, fragment)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"u1 1 1 1\n\xff\xfe garbage\n", "labels.txt: expected UTF-8 text, found byte 0xff"),
        (b"u1 " + b"99999999999999999999 " * 3 + b"\n", "labels.txt:1: expected 'UTT id id ...'"),
    ],
)  # fmt: skip
def test_label_files_that_are_not_text_or_ids_are_one_line(tmp_path, content, fragment):
    data = _kaldi_dir(tmp_path / "data")
    (data / "phones.txt").write_text("SIL 0\nAA 1\nAE 2\n")
    (data / "labels.txt").write_bytes(content)
    result = cli("probe", "phone", "--data", str(data), "--labels", str(data / "labels.txt"),
                 "--model", "mfcc", "--quiet")  # fmt: skip
    assert_one_line_error(result, fragment)


def test_figures_check_their_output_folder_first(tmp_path):
    (tmp_path / "file.txt").write_text("not a folder")
    out = str(tmp_path / "file.txt" / "fig.png")
    result = cli("tsne", "--data", str(EXAMPLE_AUDIO), "--model", "random",
                 "--out", out)  # fmt: skip
    assert_one_line_error(result, "file.txt is a file, expected a folder")
    (tmp_path / "log.jsonl").write_bytes(b'{"step": 1}\n\xff\n')
    assert_one_line_error(
        cli("plot-steps", str(tmp_path / "log.jsonl"), "--out", str(tmp_path / "a.png")),
        "log.jsonl: expected UTF-8 text, found byte 0xff at offset 12",
    )
    assert_one_line_error(
        cli("plot-steps", str(tmp_path / "log.jsonl"), "--out", out), "file.txt is a file"
    )


@pytest.mark.parametrize(
    ("args", "env", "fragment"),
    [
        (["--stage", "5"], {}, "--stage: expected a number 1-4, found 5"),
        (["--stage", "3", "--stop-stage", "1"], {}, "--stage 3 is after --stop-stage 1"),
        (["--data-dir", "file.txt/d"], {}, "--data-dir: cannot create or write the folder"),
        ([], {"DOWNLOAD_RETRIES": "abc"}, "DOWNLOAD_RETRIES: expected a whole number >= 1"),
        ([], {"DOWNLOAD_RETRIES": "0"}, "DOWNLOAD_RETRIES: expected a whole number >= 1"),
    ],
)
def test_prepare_sh_refuses_nonsense_before_any_work(tmp_path, args, env, fragment):
    import shutil
    import subprocess

    if shutil.which("bash") is None:
        pytest.skip("prepare.sh needs bash")
    (tmp_path / "file.txt").write_text("not a folder")
    args = [str(tmp_path / a) if a.startswith("file.txt") else a for a in args]
    if "--data-dir" not in args:
        args += ["--data-dir", str(tmp_path / "data")]
    proc = subprocess.run(
        ["bash", str(REPO / "recipes" / "librispeech" / "prepare.sh"), *args],
        env={**os.environ, **env, "LIBRISPEECH_URL": "http://127.0.0.1:9/none"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0 and fragment in proc.stderr, (proc.returncode, proc.stderr)
    assert "done" not in proc.stdout and not (tmp_path / "data" / "downloads").exists()


def test_kaldi_ark_and_scp_respect_the_umask(tmp_path):
    pytest.importorskip("kaldiio")
    old = os.umask(0o022)
    try:
        wav = noise(tmp_path / "a.wav")
        out = f"ark,scp:{tmp_path}/f.ark,{tmp_path}/f.scp"
        result = cli("extract", str(wav), "--out", out, "-m", "random")
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    for name in ("f.ark", "f.scp"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
