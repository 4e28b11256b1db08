"""``python -m edgemed.cli``: the same command line as the ``edgemed`` script."""

from edgemed.cli import main

main()
