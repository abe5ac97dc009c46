"""State that gateways and board hosts share across processes, and that is not board data.

Sessions (who is on a board), the directory cache, rate limits and tokens: each can be lost and
rebuilt, unlike the boards in ``persistence/`` (docs/shared-state.md).
"""
