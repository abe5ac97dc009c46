"""Run a benchmark: ``python -m bench <scenario> [options]`` (scenarios: fanout, hops)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from bench import fanout


def _hops(argv: Sequence[str]) -> int:
    # Imported on demand: it starts Ray.
    from bench import hops

    return hops.main(argv)


SCENARIOS: dict[str, Callable[[Sequence[str]], int]] = {"fanout": fanout.main, "hops": _hops}


def main(argv: Sequence[str]) -> int:
    """Dispatch to the scenario named by the first argument."""
    if not argv or argv[0] not in SCENARIOS:
        print(f"usage: python -m bench {{{','.join(SCENARIOS)}}} [options]", file=sys.stderr)
        return 2
    return SCENARIOS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
