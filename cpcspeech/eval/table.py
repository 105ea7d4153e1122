"""The CPC paper's Table 1: phone and speaker probe accuracy of a random-init CPC, MFCC features,
a CPC model and the supervised baseline, as markdown and JSON."""

import os
from collections.abc import Sequence
from pathlib import Path

from cpcspeech.errors import AlignmentError, CPCSpeechError
from cpcspeech.eval.data import EvalData
from cpcspeech.eval.features import load_feature_source, method_name, table_specs
from cpcspeech.eval.probes import (
    TASKS,
    FeatureCache,
    ProbeOptions,
    ProbeResult,
    probe_source,
)
from cpcspeech.eval.supervised import SupervisedBudget, run_supervised
from cpcspeech.files import check_writable_folder, write_json_atomic, write_text_atomic


def run_table(
    data: EvalData,
    out_dir: str | os.PathLike,
    options: ProbeOptions = ProbeOptions(),  # noqa: B008 - frozen, so one shared default is safe
    model_spec: str | None = None,
    supervised: SupervisedBudget | None = None,
    baselines: bool = True,
) -> tuple[list[ProbeResult], str]:
    """All rows of Table 1 for both tasks: Random initialization and MFCC features (unless
    ``baselines`` is False), CPC (when ``model_spec`` is given and is not one of those) and
    Supervised (when a budget is given).

    Features are extracted once per (source, split) and reused by both tasks. Writes
    ``out_dir/table.md`` and ``out_dir/table.json`` atomically.

    Returns:
        the results and the markdown table.
    """
    if data.alignment is None:
        raise AlignmentError("--table needs --labels (phone labels)")
    check_writable_folder(out_dir)
    specs = table_specs(model_spec, baselines)
    if not specs and supervised is None:
        raise CPCSpeechError(
            "probe table without baselines: expected --model or --supervised-steps, found neither"
        )
    results: list[ProbeResult] = []
    for spec in specs:
        cache: FeatureCache = {}  # one source's features at a time bounds memory
        source = load_feature_source(
            spec, layer=options.layer, seed=options.seed, device=options.device
        )
        for task in TASKS:
            results.append(probe_source(task, source, data, method_name(spec), options, cache))
    if supervised is not None:
        for task in TASKS:
            results.append(run_supervised(task, data, supervised, options.device, options.progress))
    table = format_table(results)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "table.md", table)
    summary = {
        "data": str(data.root),
        "labels": str(data.labels),
        "n_train_utterances": len(data.train),
        "n_test_utterances": len(data.test),
        "results": [r.to_dict() for r in results],
    }
    write_json_atomic(out_dir / "table.json", summary)
    return results, table


def format_table(results: Sequence[ProbeResult]) -> str:
    """Markdown in the shape of the paper's Table 1: Method | Phone | Speaker (accuracy, %)."""
    rows: dict[str, dict[str, float]] = {}
    for r in results:
        rows.setdefault(r.method, {})[r.task] = r.accuracy
    lines = [
        "| Method | Phone classification | Speaker classification |",
        "|---|---|---|",
    ]
    for method, cells in rows.items():
        phone, speaker = (
            f"{100 * cells[t]:.1f}" if t in cells else "-" for t in ("phone", "speaker")
        )
        lines.append(f"| {method} | {phone} | {speaker} |")
    return "\n".join(lines) + "\n"
