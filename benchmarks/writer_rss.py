"""RSS cost of writing the stacked .npy: a writable memmap (extract before issue 12) vs the
sequential writer extract uses now. Writes ~195 MB of rows each way, prints RSS before and after.

Run: python benchmarks/writer_rss.py
Each mode runs in a fresh subprocess; torch (through cpcspeech) is imported before "before".
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

# Runnable from a clone without installing the package (python benchmarks/writer_rss.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROWS, DIM, BLOCK = 200_000, 256, 300  # 195 MiB of float32 rows, 300 rows (3 s of c) per append


def rss_mib() -> dict[str, int]:
    found = {}
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmRSS", "RssAnon", "RssFile"):
                found[key] = int(line.split()[1]) // 1024
    return found


def worker(mode: str) -> None:
    from cpcspeech.io.writers import StackedNpy

    block = np.random.default_rng(0).standard_normal((BLOCK, DIM)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "feats.npy"
        before = rss_mib()
        if mode == "memmap":
            array = np.lib.format.open_memmap(path, "w+", np.float32, (ROWS, DIM))
            for row in range(0, ROWS - BLOCK + 1, BLOCK):
                array[row : row + BLOCK] = block
            after = rss_mib()
            array.flush()
            del array
        else:
            writer = StackedNpy(path, ROWS, DIM)
            for _ in range(0, ROWS - BLOCK + 1, BLOCK):
                writer.append(block)
            after = rss_mib()
            writer.close()
    print(f"{mode:<10} before {before}  after writing {ROWS * DIM * 4 / 2**20:.0f} MiB {after}")


def main() -> None:
    if len(sys.argv) > 1:
        worker(sys.argv[1])
        return
    for mode in ("memmap", "sequential"):
        subprocess.run([sys.executable, __file__, mode], check=True)


if __name__ == "__main__":
    main()
