"""Absolute paths the tests read: no test depends on the working directory (it is a fresh
empty folder per test, see conftest.py)."""

from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
PACKAGE = REPO / "cpcspeech"
TESTS_DATA = TESTS / "data"  # stored fixtures: golden features, CPC_audio checkpoints, ABX values
RECIPES = REPO / "recipes"
EXAMPLES = REPO / "examples"
EXAMPLE_AUDIO = EXAMPLES / "audio"
# The real corpus, checked out beside the repository; tests that need it skip without it.
SHARED_DATA = REPO.parent / "shared" / "data" / "speechocean762-train"
