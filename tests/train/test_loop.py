"""Training: learning happens, checkpoints load, kill -9 + --resume repeats the same losses, DDP."""

import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from paths import REPO, SHARED_DATA, TESTS_DATA
from safetensors.torch import load_file

from cpcspeech.config import load_config
from cpcspeech.errors import CPCSpeechError
from cpcspeech.model.cpc import CPCModel
from cpcspeech.runtime import cpu_lacks_bf16
from cpcspeech.train import TrainingError, train
from cpcspeech.train.checkpoints import list_checkpoints, load_trainer_state
from cpcspeech.train.objective import make_objective, step_seed
from cpcspeech.train.state import TrainProgress, rng_state

SMOKE = REPO / "recipes" / "smoke" / "conf.yaml"
SPEECHOCEAN = REPO / "recipes" / "speechocean762" / "conf.yaml"


def make_audio(root: Path, speakers: int, utts: int, lengths: tuple[int, int], seed: int = 0):
    """Plain folder SPEAKER/UTT.flac of chirps with harmonics: predictable, distinct per file."""
    rng = np.random.default_rng(seed)
    for s in range(speakers):
        (root / f"spk{s}").mkdir(parents=True, exist_ok=True)
        for u in range(utts):
            n = int(rng.integers(lengths[0], lengths[1] + 1))
            t = np.arange(n) / 16000
            f0 = 120 + 40 * s + 15 * u
            phase = 2 * np.pi * (f0 * t + 200 * t**2)
            x = 0.3 * np.sin(phase) + 0.15 * np.sin(3 * phase) + 0.005 * rng.standard_normal(n)
            sf.write(root / f"spk{s}" / f"s{s}u{u}.flac", x.astype(np.float32), 16000)
    return root


def smoke_config(tmp_path: Path, data: Path, *overrides: str):
    return load_config(
        SMOKE, [f"data.root={data}", f"train.out_dir={tmp_path / 'run'}", *overrides]
    )


def read_log(out_dir: Path, split: str = "train") -> list[dict]:
    lines = (out_dir / "log.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


def test_smoke_overfits_one_fixed_batch(tmp_path):
    """Four utterances of exactly one window, batch 4: every step sees the same windows."""
    data = make_audio(tmp_path / "audio", speakers=2, utts=2, lengths=(2560, 2560))
    cfg = smoke_config(tmp_path, data, "train.max_steps=40", "train.log_every=10")
    result = train(cfg)
    losses = [r["loss"] for r in read_log(result.out_dir)]
    chance = math.log(1 + cfg.loss.num_negatives)
    assert losses[0] > 0.8 * chance
    assert losses[-1] < 0.5 * chance, losses


def test_checkpoint_layout_and_loading(tmp_path):
    data = make_audio(tmp_path / "audio", speakers=3, utts=2, lengths=(3000, 6000))
    cfg = smoke_config(
        tmp_path,
        data,
        f"data.valid_list={tmp_path / 'valid.txt'}",
        "train.max_steps=6",
        "train.checkpoint_every=2",
        "train.valid_every=2",
        "train.keep_last=1",
    )
    (tmp_path / "valid.txt").write_text("s0u0\ns1u1\ns2u0\n")
    result = train(cfg)
    out = result.out_dir
    assert (out / "config.yaml").is_file() and (out / "log.csv").is_file()
    checkpoints = list_checkpoints(out)
    best = (out / "checkpoints" / "best.txt").read_text().strip()
    assert checkpoints[-1].name == "step-00000006"
    assert {p.name for p in checkpoints} == {best, "step-00000006"}  # keep_last=1 plus the best
    folder = checkpoints[-1]
    for name in (
        "config.json",
        "model.safetensors",
        "heads.safetensors",
        "trainer.pt",
        "meta.json",
    ):
        assert (folder / name).is_file(), name
    model = CPCModel.from_pretrained(folder)
    assert model.config == cfg.model
    state = load_trainer_state(folder / "trainer.pt")
    assert state["step"] == 6
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["step"] == 6 and len(meta["valid_accuracy"]) == cfg.loss.prediction_steps
    assert len(read_log(out, "valid")) == 3
    # A second run into the same folder must not overwrite it silently.
    with pytest.raises(TrainingError, match="--resume"):
        train(cfg)
    # Resuming with another model is an error that names the key.
    changed = smoke_config(
        tmp_path, data, f"data.valid_list={tmp_path / 'valid.txt'}", "model.context_dim=16"
    )
    with pytest.raises(CPCSpeechError, match="model.context_dim"):
        train(changed, resume=True)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cpcspeech", "train", *args]


AUGMENTED = [  # one augmented side, every transform, in a loader worker process
    "augment.side=past",
    "augment.pitch_p=0.5",
    "augment.reverb_p=0.5",
    "augment.band_reject_p=0.5",
    "augment.colored_noise_p=0.5",
    "augment.corpus_noise_p=0.5",
    "augment.time_dropout_p=0.5",
    "data.num_workers=1",
]


@pytest.mark.parametrize("extra", [[], AUGMENTED], ids=["plain", "augmented"])
def test_kill_and_resume_repeats_the_losses(tmp_path, extra):
    """SIGKILL after a checkpoint, then --resume: every logged loss equals an uninterrupted run,
    also with augmentation drawn in a worker process (each window seeded by its place)."""
    data = make_audio(tmp_path / "audio", speakers=3, utts=3, lengths=(3000, 9000))
    (tmp_path / "valid.txt").write_text("s0u1\ns2u2\n")
    common = [
        f"data.root={data}",
        f"data.valid_list={tmp_path / 'valid.txt'}",
        "train.max_steps=16",
        "train.checkpoint_every=4",
        "train.valid_every=4",
        "train.log_every=1",
        *extra,
    ]
    reference = train(load_config(SMOKE, [*common, f"train.out_dir={tmp_path / 'ref'}"]))

    killed = tmp_path / "killed"
    sets = [x for item in [*common, f"train.out_dir={killed}"] for x in ("--set", item)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        _cli(str(SMOKE), *sets),
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            log = killed / "log.jsonl"
            steps = (
                [json.loads(x)["step"] for x in log.read_text().splitlines()]
                if log.is_file()
                else []
            )
            if list_checkpoints(killed) and steps and max(steps) >= 6:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    last = list_checkpoints(killed)[-1].name
    assert last != "step-00000016"

    subprocess.run(
        _cli(str(SMOKE), *sets, "--resume"), env=env, cwd=REPO, check=True, capture_output=True
    )
    for split in ("train", "valid"):
        got, want = read_log(killed, split), read_log(reference.out_dir, split)
        assert [r["step"] for r in got] == [r["step"] for r in want]
        for a, b in zip(got, want, strict=True):
            keys = [k for k in a if k == "loss" or k.startswith("acc_k") or k == "lr"]
            np.testing.assert_allclose([a[k] for k in keys], [b[k] for k in keys], rtol=1e-5)
    a = CPCModel.from_pretrained(list_checkpoints(killed)[-1]).state_dict()
    b = CPCModel.from_pretrained(list_checkpoints(reference.out_dir)[-1]).state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)


def _ddp_worker(rank: int, world: int, port: int, cfg, wav, speakers, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    objective = make_objective(cfg)
    ddp = torch.nn.parallel.DistributedDataParallel(objective)
    half = wav.shape[0] // world
    rows = slice(rank * half, (rank + 1) * half)
    generator = torch.Generator().manual_seed(step_seed(cfg.train.seed, 1, rank))
    loss, _, _ = ddp(wav[rows], speakers[rows], generator)
    loss.backward()
    if rank == 0:
        torch.save({k: p.grad for k, p in objective.named_parameters()}, out)
    torch.distributed.destroy_process_group()


def test_ddp_two_processes_match_one_process(tmp_path):
    """Two gloo processes, 2 windows each, give the gradients of one process on all 4 windows.

    Each rank draws its negatives from its own half only (paper 3.1: per-GPU minibatch), so the
    single-process reference is not the loss of the 4-window batch but the mean of the two
    half-batch losses, each with the negatives' generator that rank uses (step_seed(seed, 1,
    rank)); DDP averages gradients, so the two must agree.
    """
    cfg = load_config(SMOKE, ["data.root=/unused"])
    torch.manual_seed(1)
    wav = torch.randn(4, cfg.data.window) * 0.1
    speakers = torch.tensor([0, 1, 2, 3])
    port = 29500 + os.getpid() % 1000
    out = str(tmp_path / "grads.pt")
    torch.multiprocessing.spawn(
        _ddp_worker, args=(2, port, cfg, wav, speakers, out), nprocs=2, join=True
    )
    ddp_grads = torch.load(out, weights_only=True)

    objective = make_objective(cfg)
    total = 0.0
    for rank in range(2):
        generator = torch.Generator().manual_seed(step_seed(cfg.train.seed, 1, rank))
        rows = slice(rank * 2, rank * 2 + 2)
        loss, _, _ = objective(wav[rows], speakers[rows], generator)
        total = total + loss / 2
    total.backward()
    for name, param in objective.named_parameters():
        torch.testing.assert_close(ddp_grads[name], param.grad, rtol=1e-4, atol=1e-6)


def test_speechocean762_config_indexes_real_data():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data absent: {SHARED_DATA}")
    from cpcspeech.train.windows import WindowSampler, load_split, make_loader

    cfg = load_config(SPEECHOCEAN)
    corpus = load_split(cfg.data, cfg.data.train_list)
    # The recipe trains on train_split.txt + extra_train.txt and never on test_split.txt.
    listed = [
        line.split()[0]
        for name in cfg.data.train_list
        for line in Path(name).read_text().splitlines()
        if line.strip()
    ]
    assert [Path(p).name for p in cfg.data.train_list] == ["train_split.txt", "extra_train.txt"]
    assert len(corpus.utterances) + corpus.num_short == len(listed)
    test_ids = set((SHARED_DATA / "test_split.txt").read_text().split())
    assert not test_ids & {u.utt_id for u in corpus.utterances}
    assert len(corpus.speaker_index) == 125
    batch = next(iter(make_loader(corpus, WindowSampler(corpus, cfg.data.batch_size))))
    assert batch.wav.shape == (cfg.data.batch_size, cfg.data.window)
    assert batch.wav.abs().max() > 0


@pytest.mark.slow
def test_speechocean762_config_trains_on_real_data(tmp_path):
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data absent: {SHARED_DATA}")
    cfg = load_config(
        SPEECHOCEAN,
        [
            f"train.out_dir={tmp_path / 'run'}",
            "train.max_steps=3",
            "train.valid_batches=1",
            "train.log_every=1",
            "train.device=cpu",
        ],
    )
    result = train(cfg)
    assert result.step == 3 and math.isfinite(result.train_loss)
    assert result.valid_loss is not None and math.isfinite(result.valid_loss)
    assert list_checkpoints(result.out_dir)[-1].name == "step-00000003"


def test_budget_stops_the_run_with_a_checkpoint_and_resume_respects_it(tmp_path):
    data = make_audio(tmp_path / "audio", speakers=2, utts=2, lengths=(3000, 6000))
    cfg = smoke_config(
        tmp_path,
        data,
        "train.max_steps=100000",
        "train.budget_seconds=0.5",
        "train.budget_clock=wall",
        "train.checkpoint_every=100000",
    )
    result = train(cfg)
    assert 1 <= result.step < 100000 and result.wall_seconds >= 0.5
    last = list_checkpoints(result.out_dir)[-1]
    assert last.name == f"step-{result.step:08d}"  # the budget's last step is saved
    state = load_trainer_state(last / "trainer.pt")
    assert state["cpu_seconds"] > 0 and state["wall_seconds"] >= 0.5
    again = train(cfg, resume=True)  # the budget is spent: nothing more to do
    assert again.step == result.step


def test_init_from_starts_the_body_from_a_trained_model_and_heads_fresh(tmp_path):
    """train.init_from: the encoder + context of step 0 are the given model's, bit for bit."""
    data = make_audio(tmp_path / "audio", speakers=2, utts=2, lengths=(3000, 6000))
    first = train(smoke_config(tmp_path, data, "train.max_steps=3"))
    trained = list_checkpoints(first.out_dir)[-1]
    cfg = smoke_config(
        tmp_path,
        data,
        f"train.out_dir={tmp_path / 'second'}",
        f"train.init_from={trained}",
        "train.max_steps=1",
        "optim.lr=1e-30",  # the one step leaves the body where init_from put it
        "optim.head_lr=1e-30",
    )
    second = train(cfg)
    body = CPCModel.from_pretrained(list_checkpoints(second.out_dir)[-1])
    for name, tensor in CPCModel.from_pretrained(trained).state_dict().items():
        torch.testing.assert_close(body.state_dict()[name], tensor, rtol=0, atol=1e-20)
    # Resuming ignores init_from (the checkpoint holds the weights); another shape is refused.
    other = smoke_config(
        tmp_path,
        data,
        f"train.out_dir={tmp_path / 'third'}",
        f"train.init_from={trained}",
        "model.context_dim=16",
    )
    with pytest.raises(TrainingError, match=r"model.context_dim: expected 16, found \d+"):
        train(other)


def test_init_from_relative_to_the_yaml_file(tmp_path):
    conf = tmp_path / "recipe" / "conf.yaml"
    conf.parent.mkdir()
    conf.write_text(SMOKE.read_text(encoding="utf-8"), encoding="utf-8")
    cfg = load_config(conf, ["train.init_from=../weights/model", f"data.root={tmp_path}"])
    assert cfg.train.init_from == str((tmp_path / "weights" / "model").resolve())
    named = load_config(conf, ["train.init_from=default", f"data.root={tmp_path}"])
    assert named.train.init_from == "default"


def test_cpu_lacks_bf16_reads_the_flags():
    """The bf16 warning's test: emulated bf16 on CPUs without bf16 instructions is ~9x slower."""
    assert cpu_lacks_bf16("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512bw\n")
    assert not cpu_lacks_bf16("flags\t\t: fpu avx512f avx512_bf16\n")
    assert not cpu_lacks_bf16("flags\t\t: fpu amx_bf16 amx_tile\n")
    assert not cpu_lacks_bf16("Processor\t: ARMv8\n")  # no flags line: unknown, no warning


# ----- the on-disk format: a run written before train/loop.py was split resumes exactly -----
COMPAT = TESTS_DATA / "train_compat"
COMPAT_PREFIX = "/tmp/cpcspeech-train-compat"  # where make_fixture.py wrote the run
CHECKPOINT_FILES = {
    "config.json",
    "config.yaml",
    "heads.safetensors",
    "meta.json",
    "model.safetensors",
    "trainer.pt",
}
META_KEYS = [
    "step",
    "audio_seconds",
    "wall_seconds",
    "cpu_seconds",
    "hardware",
    "valid_loss",
    "valid_accuracy",
    "train_loss",
    "sha256",
]
TRAINER_KEYS = [
    "format_version",
    "step",
    "epoch",
    "batch_index",
    "audio_seconds",
    "wall_seconds",
    "cpu_seconds",
    "optimizer",
    "scheduler",
    "rng",
    "accumulator",
    "best",
]
LOG_COLUMNS = "step,split,loss,acc_k1,acc_k2,acc_k3,acc_k4,lr,audio_seconds,wall_seconds"


def _key_tree(value):
    """A nested state's keys and leaf types, to compare two trainer.pt files' shapes."""
    if isinstance(value, dict):
        return {k: _key_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [type(value).__name__, len(value)]
    return type(value).__name__


def _move_compat_run(tmp_path: Path) -> Path:
    """The fixture's killed run, moved under tmp_path: its paths rewritten in config.yaml and
    config.yaml's sha256 updated in meta.json (as if the folder and its data had moved)."""
    make_audio(tmp_path / "audio", speakers=3, utts=2, lengths=(3000, 6000))
    (tmp_path / "valid.txt").write_text("s0u0\ns1u1\ns2u0\n")
    run = tmp_path / "run"
    shutil.copytree(COMPAT / "run", run)
    folder = run / "checkpoints" / "step-00000002"
    for path in (run / "config.yaml", folder / "config.yaml"):
        text = path.read_text(encoding="utf-8").replace(COMPAT_PREFIX, str(tmp_path))
        path.write_text(text, encoding="utf-8")
    meta = json.loads((folder / "meta.json").read_text())
    meta["sha256"]["config.yaml"] = hashlib.sha256(
        (folder / "config.yaml").read_bytes()
    ).hexdigest()
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return run


def test_checkpoint_format_field_names():
    """The fixture (written by the code before the split) has the files and keys listed here."""
    folder = COMPAT / "run" / "checkpoints" / "step-00000002"
    assert {p.name for p in folder.iterdir()} == CHECKPOINT_FILES
    meta = json.loads((folder / "meta.json").read_text())
    assert list(meta) == META_KEYS
    assert sorted(meta["sha256"]) == sorted(CHECKPOINT_FILES - {"meta.json"})
    state = load_trainer_state(folder / "trainer.pt")
    assert list(state) == TRAINER_KEYS and state["format_version"] == 1
    assert list(state["accumulator"]) == ["loss_sum", "accuracy_sum", "count"]
    assert list(state["best"]) == ["name", "valid_loss", "last_valid_loss"]
    assert list(state["rng"]) == ["torch", "python"]
    assert (COMPAT / "run" / "checkpoints" / "best.txt").read_text() == "step-00000002\n"


def test_a_checkpoint_written_before_the_split_resumes_exactly(tmp_path):
    """Resume the fixture's step-2 checkpoint to step 4: the losses, accuracies and weights are
    the uninterrupted run's (bit for bit on one thread of the machine that wrote them; within
    float tolerance elsewhere), and the new checkpoint has the old one's format."""
    run = _move_compat_run(tmp_path)
    result = train(load_config(run / "config.yaml"), resume=True)
    assert result.step == 4 and result.best_checkpoint == "step-00000004"
    assert (run / "checkpoints" / "best.txt").read_text() == "step-00000004\n"
    assert (run / "log.csv").read_text().splitlines()[0] == LOG_COLUMNS
    got = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    want = [json.loads(x) for x in (COMPAT / "reference.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in got] == [(r["step"], r["split"]) for r in want]
    for a, b in zip(got, want, strict=True):
        assert list(a) == list(b) and a["audio_seconds"] == b["audio_seconds"]
        keys = [k for k in a if k == "loss" or k.startswith("acc_k") or k == "lr"]
        np.testing.assert_allclose([a[k] for k in keys], [b[k] for k in keys], rtol=1e-5)
    new, old = run / "checkpoints" / "step-00000004", run / "checkpoints" / "step-00000002"
    assert {p.name for p in new.iterdir()} == CHECKPOINT_FILES
    assert list(json.loads((new / "meta.json").read_text())) == META_KEYS
    new_state, old_state = (load_trainer_state(p / "trainer.pt") for p in (new, old))
    assert _key_tree(new_state) == _key_tree(old_state)
    for name in ("model.safetensors", "heads.safetensors"):
        a, b = load_file(str(new / name)), load_file(str(COMPAT / f"step-4-{name}"))
        assert list(a) == list(b)
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)


def _assert_same_state(a, b, where="trainer.pt"):
    """Two nested states equal key for key (in order), tensors bit for bit."""
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            _assert_same_state(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same_state(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b, where


def test_progress_maps_to_and_from_the_saved_state_exactly():
    """TrainProgress.from_state then to_state gives back the old code's trainer.pt, bit for bit;
    meta.json's fields come from the same progress."""
    folder = COMPAT / "run" / "checkpoints" / "step-00000002"
    old = load_trainer_state(folder / "trainer.pt")
    progress = TrainProgress.from_state(old)
    assert progress.step == 2 and progress.best_name == "step-00000002"
    assert math.isnan(progress.train_loss) and progress.valid_accuracy is None
    _assert_same_state(progress.to_state(old["optimizer"], old["scheduler"], old["rng"]), old)
    meta = json.loads((folder / "meta.json").read_text())
    progress.valid_accuracy, progress.train_loss = meta["valid_accuracy"], meta["train_loss"]
    assert progress.to_meta(meta["hardware"]) == {k: v for k, v in meta.items() if k != "sha256"}
    # A checkpoint from before budgets existed has no cpu_seconds: it reads as 0.
    older = {k: v for k, v in old.items() if k != "cpu_seconds"}
    assert TrainProgress.from_state(older).cpu_seconds == 0.0
    assert list(rng_state()) in (["torch", "python"], ["torch", "python", "cuda"])


def test_old_flat_names_still_import_with_a_warning():
    import cpcspeech.train as package
    from cpcspeech.train import checkpoints

    with pytest.warns(DeprecationWarning, match="cpcspeech.train.checkpoints.list_checkpoints"):
        assert package.list_checkpoints is checkpoints.list_checkpoints
    with pytest.raises(AttributeError, match="no_such_name"):
        package.no_such_name  # noqa: B018
