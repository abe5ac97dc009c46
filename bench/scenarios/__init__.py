"""The scenarios of ``python -m bench run``, by name."""
