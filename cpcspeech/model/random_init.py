"""An untrained CPCModel (``--model random``): PyTorch's default init from a local generator.

The global RNG is neither seeded nor advanced, so building one never changes what else draws.
"""

import math

import torch
from torch import nn

from cpcspeech.config import ModelConfig, check_options
from cpcspeech.model.cpc import ChannelNorm, CPCModel

# Modules whose default init draws no random numbers (ones, zeros, running statistics).
_DETERMINISTIC = (nn.LayerNorm, nn.BatchNorm1d, nn.InstanceNorm1d)


def random_model(seed: int = 0, config: ModelConfig | None = None) -> CPCModel:
    """An untrained CPCModel whose weights are PyTorch's default init, drawn from ``seed``.

    The draws are the ones ``torch.manual_seed(seed); CPCModel(config)`` makes, in the same
    order and from the same (CPU Mersenne Twister) stream, so the weights are equal to that
    model's, bit for bit; but they come from a local ``torch.Generator``: the global RNG is left
    as it was. Returned on the CPU, in training mode like any new module.
    """
    check_options(seed=seed)  # --seed of every command that offers --model random
    generator = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        model = CPCModel(config)  # shapes only: nothing is drawn or allocated
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for module in model.modules():
            _reset(module, generator)
    return model


def _reset(module: nn.Module, generator: torch.Generator) -> None:
    """One module's own parameters and buffers, as its ``reset_parameters`` would set them."""
    if isinstance(module, nn.Conv1d):
        # nn.Conv1d.reset_parameters: kaiming_uniform_(a=sqrt(5)), then U(-1/sqrt(fan_in), ..).
        nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
        fan_in = module.weight.shape[1] * module.weight.shape[2]
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        nn.init.uniform_(module.bias, -bound, bound, generator=generator)
    elif isinstance(module, nn.RNNBase):
        # nn.RNNBase.reset_parameters: every weight and bias U(-1/sqrt(hidden), 1/sqrt(hidden)).
        bound = 1.0 / math.sqrt(module.hidden_size) if module.hidden_size > 0 else 0
        for weight in module.parameters():
            nn.init.uniform_(weight, -bound, bound, generator=generator)
    elif isinstance(module, ChannelNorm):
        module.weight.fill_(1.0)
        module.bias.zero_()
    elif isinstance(module, _DETERMINISTIC):
        module.reset_parameters()
    elif any(True for _ in module.parameters(recurse=False)) or any(
        True for _ in module.buffers(recurse=False)
    ):
        raise TypeError(
            f"random_model: expected only Conv1d, recurrent and norm layers, found "
            f"{type(module).__name__} with its own tensors"
        )
