"""Old import paths of modules that moved into subpackages keep working, with a warning.

``import cpcspeech.audio`` returns the module object of ``cpcspeech.io.audio`` itself (not a
copy), so isinstance checks and monkeypatching see one module.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

# old module -> new module (the flat layout before the subpackages)
MOVED = {
    "cpcspeech.audio": "cpcspeech.io.audio",
    "cpcspeech.kaldi": "cpcspeech.io.kaldi",
    "cpcspeech.alignments": "cpcspeech.io.alignments",
    "cpcspeech.shards": "cpcspeech.io.shards",
    "cpcspeech.corpus": "cpcspeech.io.corpus",
    "cpcspeech.batched": "cpcspeech.model.batched",
    "cpcspeech.pretrained": "cpcspeech.weights.resolve",
    "cpcspeech.published": "cpcspeech.weights.published",
    "cpcspeech.convert": "cpcspeech.weights.convert",
    "cpcspeech.export": "cpcspeech.weights.export",
    "cpcspeech.loss": "cpcspeech.train.loss",
    "cpcspeech.augment": "cpcspeech.train.augment",
    "cpcspeech.data": "cpcspeech.train.windows",
    "cpcspeech.features": "cpcspeech.eval.features",
    "cpcspeech.mfcc": "cpcspeech.eval.mfcc",
    "cpcspeech.probes": "cpcspeech.eval.probes",
    "cpcspeech.abx": "cpcspeech.eval.abx",
    "cpcspeech.units": "cpcspeech.eval.units",
    "cpcspeech.plots": "cpcspeech.eval.plots",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec):  # a placeholder; exec_module swaps in the real module
        return None

    def exec_module(self, module) -> None:
        warnings.warn(
            f"{module.__name__} moved to {self.new}: import it from there",
            DeprecationWarning,
            stacklevel=2,
        )
        sys.modules[module.__name__] = importlib.import_module(self.new)


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Resolves the old flat module names to their new homes."""

    def find_spec(self, fullname, path, target=None):
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new))


def install() -> None:
    """Put the finder on sys.meta_path once."""
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
