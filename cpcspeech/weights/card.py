"""Model cards: the README.md beside config.json + model.safetensors in a model directory.

The parts every card shares (front matter, title, usage, the model config table) live here; the
cards of ``cpcspeech convert`` (weights/convert.py) and ``cpcspeech export`` (weights/export.py)
add their own sections.
"""

from typing import Any

CARD_NAME = "README.md"


def card_header(name: str, summary: list[str]) -> list[str]:
    """Hub front matter, the title and a summary paragraph (one list item per line)."""
    return [
        "---",
        "library_name: cpcspeech",
        "tags: [audio, speech, self-supervised-learning, contrastive-predictive-coding]",
        "---",
        "",
        f"# {name}",
        "",
        *summary,
        "",
    ]


def usage_section(name: str, extract_comment: str) -> list[str]:
    """How to load the model directory ``name`` and extract features from it.

    Through :func:`cpcspeech.load_model`, which takes a folder and a Hub repo id alike
    (``CPCModel.from_pretrained`` takes a local folder only).
    """
    return [
        "## Usage",
        "",
        "```python",
        "import cpcspeech",
        "",
        f'model, _ = cpcspeech.load_model("{name}")  # a folder path or a Hub repo id org/name',
        f"c = model.extract(wav)  # {extract_comment}",
        "```",
        "",
    ]


def config_table(values: dict[str, Any]) -> list[str]:
    """The model config as a two-column Markdown table, under a "## Model" heading."""
    return [
        "## Model",
        "",
        "| field | value |",
        "|---|---|",
        *[f"| {key} | {value} |" for key, value in values.items()],
        "",
    ]
