"""``python -m boardcast``: the ``boardcast`` command without its installed script."""

from boardcast.cli import main

main()
