"""``python -m digital_experiments``: the command line (see :mod:`digital_experiments.cli`)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
