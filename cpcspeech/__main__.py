import sys

from cpcspeech.cli import app

if __name__ == "__main__":
    sys.exit(app())
