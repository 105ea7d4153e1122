"""Writes tests/data/train_compat: a training run killed after its step-2 checkpoint, as the code
of commit fe6fc3d (before train/loop.py was split) wrote it, and the uninterrupted run's log and
step-4 weights. tests/train/test_loop.py resumes it with today's code. Run from the repository root:

    OMP_NUM_THREADS=1 .venv/bin/python tests/data/train_compat/make_fixture.py
"""

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE.parents[1] / "train")]  # paths, test_loop

from test_loop import SMOKE, make_audio  # noqa: E402

from cpcspeech.config import load_config  # noqa: E402
from cpcspeech.train import train  # noqa: E402

WORK = Path("/tmp/cpcspeech-train-compat")  # test_train.py replaces this prefix in config.yaml
OVERRIDES = [
    "model.encoder_channels=8",
    "model.context_dim=8",
    "train.max_steps=4",
    "train.checkpoint_every=2",
    "train.valid_every=2",
    "train.log_every=1",
    "train.keep_last=0",
    "train.valid_batches=1",
]
VALID = "s0u0\ns1u1\ns2u0\n"


def main() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    data = make_audio(WORK / "audio", speakers=3, utts=2, lengths=(3000, 6000))
    (WORK / "valid.txt").write_text(VALID)
    run = WORK / "run"
    cfg = load_config(
        SMOKE,
        [f"data.root={data}", f"data.valid_list={WORK / 'valid.txt'}", f"train.out_dir={run}"]
        + OVERRIDES,
    )
    train(cfg)
    out = HERE / "run"
    shutil.rmtree(out, ignore_errors=True)
    (out / "checkpoints").mkdir(parents=True)
    shutil.copytree(run / "checkpoints" / "step-00000002", out / "checkpoints" / "step-00000002")
    (out / "checkpoints" / "best.txt").write_text("step-00000002\n")
    shutil.copy(run / "config.yaml", out / "config.yaml")
    log = (run / "log.jsonl").read_text().splitlines(keepends=True)
    (HERE / "reference.jsonl").write_text("".join(log))  # the uninterrupted run
    (out / "log.jsonl").write_text("".join(x for x in log if '"step": 4,' not in x))  # killed
    for name in ("model.safetensors", "heads.safetensors"):
        shutil.copy(run / "checkpoints" / "step-00000004" / name, HERE / f"step-4-{name}")


if __name__ == "__main__":
    main()
