"""The supervised baseline writes its JSON after every evaluation point and continues a stopped
run from its saved state exactly as if it had not stopped."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from cpcspeech.errors import CPCSpeechError
from cpcspeech.eval.data import resolve_eval_data
from cpcspeech.eval.probes import ProbeOptions
from cpcspeech.eval.supervised import SupervisedBudget, run_supervised_task
from cpcspeech.io.alignments import CANONICAL_INDEX, label_frames
from cpcspeech.weights.resolve import load_model


def _corpus(root: Path) -> Path:
    """2 speakers x 3 utterances of 0.4 s noise, random CPC-format labels, a 4/2 split."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    scp, spk, labels = [], [], []
    for s in range(2):
        for k in range(3):
            utt = f"s{s}-{k}"
            wav = (0.1 * rng.standard_normal(6400)).astype(np.float32)
            sf.write(root / f"{utt}.wav", wav, 16000)
            scp.append(f"{utt} {root / f'{utt}.wav'}")
            spk.append(f"{utt} s{s}")
            ids = rng.integers(0, len(CANONICAL_INDEX), label_frames(6400))
            labels.append(f"{utt} " + " ".join(map(str, ids)))
    files = {
        "wav.scp": scp,
        "utt2spk": spk,
        "converted_aligned_phones.txt": labels,
        "phones.txt": [f"{p} {i}" for i, p in enumerate(CANONICAL_INDEX)],
        "train_split.txt": ["s0-0", "s0-1", "s1-0", "s1-1"],
        "test_split.txt": ["s0-2", "s1-2"],
    }
    for name, lines in files.items():
        (root / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture
def data(tmp_path):
    root = _corpus(tmp_path / "corpus")
    return resolve_eval_data(str(root), str(root / "converted_aligned_phones.txt"))


def _budget(steps: int, **kw) -> SupervisedBudget:
    return SupervisedBudget(steps=steps, batch_size=2, window=3200, eval_every=2, **kw)


OPTIONS = ProbeOptions(progress=False)


def test_json_is_written_after_every_point(data, tmp_path):
    out = tmp_path / "sup"
    seen = []

    def on_point(step, acc):
        saved = json.loads((out / "probe-phone-supervised.json").read_text())
        seen.append((step, saved["details"].get("complete", True), saved["details"]["curve"]))

    torch.manual_seed(0)
    result = run_supervised_task("phone", data, _budget(5), OPTIONS, out, on_point)
    assert [(s, c, [p[0] for p in curve]) for s, c, curve in seen] == [
        (2, False, [2]),
        (4, False, [2, 4]),
        (5, False, [2, 4, 5]),
    ]
    final = json.loads((out / "probe-phone-supervised.json").read_text())
    assert "complete" not in final["details"] and final["accuracy"] == result.accuracy
    assert [p[0] for p in final["details"]["curve"]] == [2, 4, 5]


def test_a_stopped_run_continues_exactly(data, tmp_path):
    whole = run_supervised_task("phone", data, _budget(6), OPTIONS, tmp_path / "whole")
    first = run_supervised_task("phone", data, _budget(4), OPTIONS, tmp_path / "parts")
    assert [p[0] for p in first.details["curve"]] == [2, 4]
    second = run_supervised_task("phone", data, _budget(6), OPTIONS, tmp_path / "parts")
    assert [p[0] for p in second.details["curve"]] == [2, 4, 6]
    np.testing.assert_allclose(
        np.array(second.details["curve"]), np.array(whole.details["curve"]), atol=1e-6
    )
    assert second.n_train_frames == whole.n_train_frames


def test_the_model_is_saved_as_a_model_directory(data, tmp_path):
    """The supervised body at the last point loads like any model (for ABX, units, ...) and holds
    exactly the weights of the saved state."""
    run_supervised_task("phone", data, _budget(4), OPTIONS, tmp_path / "run")
    model, _ = load_model(str(tmp_path / "run" / "supervised-phone-model"))
    state = load_file(str(tmp_path / "run" / "supervised-phone-state" / "state.safetensors"))
    body = {k[len("model.cpc.") :]: v for k, v in state.items() if k.startswith("model.cpc.")}
    assert body.keys() == model.state_dict().keys()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, body[name], rtol=0, atol=0)
    assert model.config.norm == "none"


def test_another_budget_is_refused(data, tmp_path):
    run_supervised_task("phone", data, _budget(2), OPTIONS, tmp_path / "run")
    with pytest.raises(CPCSpeechError, match="lr: saved 0.001, now 0.002"):
        run_supervised_task("phone", data, _budget(4, lr=2e-3), OPTIONS, tmp_path / "run")


def test_bf16_trains_and_may_continue_an_fp32_run(data, tmp_path):
    """bf16 (encoder under autocast) gives a finite curve, is named in the budget, and a run
    saved in fp32 continues in bf16: precision is not part of the budget that must match."""
    run_supervised_task("phone", data, _budget(2), OPTIONS, tmp_path / "run")
    result = run_supervised_task(
        "phone", data, _budget(4, precision="bf16"), OPTIONS, tmp_path / "run"
    )
    assert [p[0] for p in result.details["curve"]] == [2, 4]
    assert all(np.isfinite(p[1]) for p in result.details["curve"])
    assert "encoder in bf16" in result.details["budget"]


def test_bf16_logits_are_float32_and_close_to_fp32():
    from cpcspeech.eval.supervised import _Supervised

    model = _Supervised(num_classes=5, seed=0, norm="channel").eval()
    wav = torch.randn(2, 3200)
    with torch.no_grad():
        full, half = model(wav), model(wav, bf16=True)
    assert half.dtype == torch.float32 and half.shape == full.shape == (2, 20, 5)
    assert torch.allclose(full, half, atol=0.1, rtol=0.1)


def test_unknown_precision_is_refused():
    with pytest.raises(CPCSpeechError, match="expected one of fp32, bf16, found 'fp16'"):
        SupervisedBudget(precision="fp16")
