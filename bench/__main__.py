"""Run a benchmark: ``python -m bench <command> [options]``.

Commands: ``run`` (a scenario on one or more targets it starts itself),
``setup`` (install the comparison servers), ``fanout`` (fan-out load against a
server you started), ``hops`` (Ray call versus frame stream), ``room`` (the cost of the
board room's integrity checks per update), ``rest`` (REST bulk writes and queries),
``auth-flood`` (a calm client's latency while others flood the gateway), ``webhooks``
(event-to-delivery latency and deliveries per second), ``events`` (event-to-effect latency
and worker throughput of analytics), ``notifications`` (assignment-to-stream and
assignment-to-e-mail latency, notifications and e-mails per second), ``wakeups`` (the CPU
one wake-up of an idle event loop costs, in Python and in Node), ``cost-plot`` (CPU per
delivered update of several runs side by side), ``store-append`` (the CPU of one group
commit of the embedded store).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence


def _run(argv: Sequence[str]) -> int:
    from bench import runner

    return runner.main(argv)


def _setup(argv: Sequence[str]) -> int:
    from bench import install

    return install.main(argv)


def _fanout(argv: Sequence[str]) -> int:
    from bench import fanout

    return fanout.main(argv)


def _room(argv: Sequence[str]) -> int:
    from bench import room

    return room.main(argv)


def _rest(argv: Sequence[str]) -> int:
    from bench import rest

    return rest.main(argv)


def _auth_flood(argv: Sequence[str]) -> int:
    from bench import auth_flood

    return auth_flood.main(argv)


def _revocation(argv: Sequence[str]) -> int:
    from bench import revocation

    return revocation.main(argv)


def _webhooks(argv: Sequence[str]) -> int:
    from bench import webhooks

    return webhooks.main(argv)


def _notifications(argv: Sequence[str]) -> int:
    from bench import notifications

    return notifications.main(argv)


def _events(argv: Sequence[str]) -> int:
    from bench import events

    return events.main(argv)


def _hops(argv: Sequence[str]) -> int:
    # Imported on demand: it starts Ray.
    from bench import hops

    return hops.main(argv)


def _cost_plot(argv: Sequence[str]) -> int:
    from bench import cost_plot

    return cost_plot.main(argv)


def _store_append(argv: Sequence[str]) -> int:
    from bench import store_append

    return store_append.main(argv)


def _wakeups(argv: Sequence[str]) -> int:
    from bench import wakeups

    return wakeups.main(argv)


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "run": _run,
    "setup": _setup,
    "fanout": _fanout,
    "hops": _hops,
    "room": _room,
    "rest": _rest,
    "events": _events,
    "notifications": _notifications,
    "auth-flood": _auth_flood,
    "revocation": _revocation,
    "webhooks": _webhooks,
    "wakeups": _wakeups,
    "cost-plot": _cost_plot,
    "store-append": _store_append,
}


def main(argv: Sequence[str]) -> int:
    """Dispatch to the command named by the first argument."""
    # Scenarios that run a multi-node cluster use the test suite's harness (tests/), which is
    # not an installed package: found from any directory, after what is installed.
    from bench.paths import ROOT

    if str(ROOT) not in sys.path:
        sys.path.append(str(ROOT))
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m bench {{{','.join(COMMANDS)}}} [options]", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
