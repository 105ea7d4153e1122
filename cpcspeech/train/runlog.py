"""A training run's log: one record per logged step and split, in log.jsonl, log.csv and
(optionally) TensorBoard. Written by rank 0 only."""

import csv
import json
import os
from pathlib import Path
from typing import Any

from cpcspeech.errors import ConfigError
from cpcspeech.files import temp_sibling, write_text_atomic


def log_record(
    step: int, split: str, loss: float, accuracy: list[float], lr: float, audio: float, wall: float
) -> dict[str, Any]:
    """One log line: step, split ("train" or "valid"), loss, acc_k1..acc_kK (``accuracy`` holds
    K values), lr, audio_seconds, wall_seconds; the keys in log.csv's column order."""
    rec: dict[str, Any] = {"step": step, "split": split, "loss": loss}
    rec.update({f"acc_k{k}": a for k, a in enumerate(accuracy, 1)})
    rec.update({"lr": lr, "audio_seconds": audio, "wall_seconds": wall})
    return rec


class RunLog:
    """log.jsonl + log.csv in out_dir (rank 0 only), and optional TensorBoard.

    Opening it keeps the records of steps <= ``keep_until`` (what the resumed checkpoint
    covers) and rewrites both files from them, so a resumed run's log has each step once.
    """

    def __init__(self, out_dir: Path, num_steps_k: int, tensorboard: bool, keep_until: int):
        self.jsonl = out_dir / "log.jsonl"
        self.csv = out_dir / "log.csv"
        self.fields = (
            ["step", "split", "loss"]
            + [f"acc_k{k}" for k in range(1, num_steps_k + 1)]
            + ["lr", "audio_seconds", "wall_seconds"]
        )
        records = self._kept_records(keep_until)
        write_text_atomic(self.jsonl, "".join(json.dumps(r) + "\n" for r in records))
        tmp = temp_sibling(self.csv)
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, self.fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(records)
        os.replace(tmp, self.csv)
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise ConfigError(
                    "train.tensorboard is true but tensorboard is not installed; "
                    "pip install 'cpcspeech[tensorboard]'"
                ) from err
            self.writer = SummaryWriter(str(out_dir / "tensorboard"))

    def _kept_records(self, keep_until: int) -> list[dict[str, Any]]:
        """log.jsonl's records up to step ``keep_until`` (none without a log.jsonl)."""
        records = []
        if self.jsonl.is_file():
            with open(self.jsonl, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        rec = json.loads(line)
                        if rec["step"] <= keep_until:
                            records.append(rec)
        return records

    def write(self, record: dict[str, Any]) -> None:
        """Append one ``log_record`` to every log."""
        with open(self.jsonl, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        with open(self.csv, "a", encoding="utf-8", newline="") as f:
            csv.DictWriter(f, self.fields, extrasaction="ignore").writerow(record)
        if self.writer is not None:
            split, step = record["split"], record["step"]
            for key, value in record.items():
                if key == "loss" or key.startswith("acc_k"):
                    self.writer.add_scalar(f"{split}/{key}", value, step)
            self.writer.add_scalar("train/lr", record["lr"], step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
