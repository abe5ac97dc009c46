"""The scenarios of ``python -m bench run`` (registered by name in :mod:`bench.runner`)."""
