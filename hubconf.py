"""torch.hub entry point: ``torch.hub.load(REPO, "cpc", name="default")`` returns a CPCModel.

``name`` is any spec ``cpcspeech.load_model`` accepts (a shipped name, a local model directory or
checkpoint, a Hub repo id ``org/name[@revision]``, a published name, a CPC_audio checkpoint) and is
passed through as is. It cannot be called ``model``: ``torch.hub.load(repo_or_dir, model, ...)``
already uses that keyword for the entry point's name.
"""

# torch.hub checks that these modules can be imported before it imports this file. They are the
# modules `import cpcspeech` needs, named as Python imports them (not as pip names them).
dependencies = ["torch", "numpy", "soundfile", "soxr", "yaml", "safetensors", "huggingface_hub"]


def cpc(name: str = "default", revision: str | None = None, map_location: str = "cpu"):
    """A CPCModel in eval mode, loaded strictly from safetensors by ``cpcspeech.load_model``.

    Args:
        name: "default" (the shipped weights), another shipped name, a local model directory or
            training checkpoint, or a Hugging Face Hub repo id "org/name" (``revision`` pins it).
        map_location: device the weights are loaded onto ("cpu" or "cuda").

    Returns:
        CPCModel: ``model(wav)`` maps wav (B, N) at 16 kHz to z (B, T, 512) and c (B, T, 256);
        ``model.extract(wav)`` maps wav (N,) to c (T, 256), T = (N + 1) // 160.
    """
    from cpcspeech import load_model

    model, _ = load_model(name, revision=revision, map_location=map_location)
    return model.eval()
