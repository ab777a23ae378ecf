"""``python -m radassets.cli``: the same command line as the ``radassets`` console script."""

from radassets.cli import main

main()
