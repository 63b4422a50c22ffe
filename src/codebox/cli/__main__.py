"""``python -m codebox.cli``: the same as the ``codebox`` command."""

from . import main

main()
