"""The Boardcast process: the ``boardcast`` command and the deployment it starts.

The components (``crdt/``, ``actors/``, ``gateway/``, ``persistence/``, ``shared/``) know nothing
of one another's wiring; this package is the one that imports them all and puts them together.
"""
