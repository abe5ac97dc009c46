"""A mutation fuzzer for the Yjs updates a board receives, and the corpus it writes.

``python -m tests.fuzz.mutate --seconds 120 --out tests/corpus`` runs it; the unit,
room and engine tests replay what it saved under ``tests/corpus/``.
"""
