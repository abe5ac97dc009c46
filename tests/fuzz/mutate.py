"""Mutation fuzzer: realistic board updates, mutated, fed in sequences to fresh pycrdt Docs.

    python -m tests.fuzz.mutate --seconds 120 --out tests/corpus

Each case is 1-6 updates taken from a causal history of several clients (see
:mod:`tests.fuzz.board_updates`), some mutated, in causal or shuffled order. The
cases run in a forked child (:mod:`tests.fuzz.sandbox`); findings are minimised
and written as JSON (:mod:`tests.fuzz.corpus`).
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from pycrdt import Map, merge_updates

from tests.fuzz.board_updates import Writer, causal_history
from tests.fuzz.corpus import load_corpus, make_case, save_case
from tests.fuzz.mutations import Mutator
from tests.fuzz.oracle import HANG, OK, Verdict
from tests.fuzz.sandbox import Sandbox, run_isolated

# A minimisation probes the sandbox hundreds of times; bound each finding's share.
MINIMISE_SECONDS = 20.0


@dataclass
class Case:
    """Updates in the order they are applied; for complete cases, also in causal order."""

    updates: list[bytes]
    complete: bool = False
    causal: list[bytes] | None = None


def generate_case(rng: random.Random, mutator: Mutator) -> Case:
    """A random case: mostly mutated, sometimes a shuffled, valid, causally complete chain."""
    history = causal_history(
        rng, writers=rng.randint(1, 3), edits=rng.randint(3, 8), sync_chance=rng.random()
    )
    if rng.random() < 0.1:
        # The out-of-order drop: every update valid, the set complete, the order shuffled.
        causal = history[: rng.randint(3, min(6, len(history)))]
        shuffled = rng.sample(causal, len(causal))
        return Case(shuffled, complete=True, causal=causal)
    if rng.random() < 0.2:
        # What a step 2 looks like: several edits merged into one update.
        start = rng.randrange(len(history) - 1)
        history[start : start + 2] = [merge_updates(*history[start : start + 2])]
    count = rng.randint(1, min(6, len(history)))
    if rng.random() < 0.5:
        start = rng.randrange(len(history) - count + 1)
        picked = history[start : start + count]
    else:
        picked = rng.sample(history, count)
    mutated = rng.sample(range(count), rng.randint(1, min(2, count)))
    for index in mutated:
        donor = rng.choice(history)
        picked[index] = mutator.mutate(picked[index], donor, rounds=rng.randint(1, 3))
    if rng.random() < 0.5:
        # Another client's edits between the frames, as a room sees them: a transaction
        # left half-done by a bad frame is committed by the next good one.
        bystander = innocent_edits(len(picked))
        picked = [u for pair in zip(picked, bystander, strict=True) for u in pair]
    return Case(picked)


def innocent_edits(count: int, *, client_id: int = 7) -> list[bytes]:
    """``count`` valid updates of a client editing a root no seed update touches."""
    writer = Writer(client_id)
    edits = []
    for index in range(count):
        edit = writer.edit(lambda doc, i=index: doc.get("bystander", type=Map).__setitem__("k", i))
        assert edit is not None
        edits.append(edit)
    return edits


def signature(verdict: Verdict) -> str:
    """Findings with the same kind and message shape count as one."""
    detail = re.sub(r"(?<!rs:)\b\d+\b", "N", verdict.detail)
    detail = re.sub(r"\{[^}]*\}", "{...}", detail)
    return f"{verdict.kind}|{detail[:120]}"


class Minimiser:
    """Shrinks a case while it still triggers the same kind of finding."""

    def __init__(self, sandbox: Sandbox, kind: str, *, budget: float = MINIMISE_SECONDS) -> None:
        self.sandbox = sandbox
        self.kind = kind
        self.deadline = time.monotonic() + budget
        self.probes = 0

    def _still(self, updates: list[bytes]) -> bool:
        self.probes += 1
        return self.sandbox.run(updates).kind == self.kind

    def minimise(self, case: Case) -> Case:
        """The smallest variant of ``case`` found before the budget ran out."""
        if case.complete:
            return self._minimise_complete(case)
        updates = list(case.updates)
        for index in reversed(range(len(updates))):
            if len(updates) > 1 and time.monotonic() < self.deadline:
                candidate = updates[:index] + updates[index + 1 :]
                if self._still(candidate):
                    updates = candidate
        changed = True
        while changed and time.monotonic() < self.deadline:
            changed = False
            for index in range(len(updates)):
                shrunk = self._shrink_bytes(updates, index)
                if shrunk != updates[index]:
                    updates[index] = shrunk
                    changed = True
        return Case(updates)

    def _shrink_bytes(self, updates: list[bytes], index: int) -> bytes:
        data = updates[index]
        chunk = max(len(data) // 2, 1)
        while chunk >= 1 and time.monotonic() < self.deadline:
            start = 0
            while start < len(data) and time.monotonic() < self.deadline:
                candidate = data[:start] + data[start + chunk :]
                if candidate and self._still([*updates[:index], candidate, *updates[index + 1 :]]):
                    data = candidate
                else:
                    start += chunk
            chunk //= 2
        return data

    def _minimise_complete(self, case: Case) -> Case:
        # Only drop whole updates, and only while the rest stays causally complete
        # (applied in causal order, every clock arrives): byte edits would make the
        # updates invalid, and a missing dependency is not a drop.
        assert case.causal is not None
        causal = list(case.causal)
        order = list(case.updates)
        for update in list(causal):
            if len(causal) <= 2 or time.monotonic() >= self.deadline:
                break
            rest_causal = [u for u in causal if u is not update]
            rest_order = [u for u in order if u is not update]
            self.probes += 2
            complete = self.sandbox.run(rest_causal, complete=True).kind == OK
            if complete and self.sandbox.run(rest_order, complete=True).kind == self.kind:
                causal, order = rest_causal, rest_order
        return Case(order, complete=True, causal=causal)


def verdict_timeout(verdict: Verdict) -> float:
    """Probes of a hang wait long enough to tell it from a slow case."""
    return 20.0 if verdict.kind == HANG else 2.0


def fuzz(*, seconds: float, out: Path, seed: int, per_kind: int, timeout: float) -> int:
    """Run for ``seconds``; write minimised findings to ``out``; return how many were saved."""
    rng = random.Random(seed)
    mutator = Mutator(rng)
    sandbox = Sandbox(timeout=timeout)
    pycrdt_version = version("pycrdt")
    started = time.monotonic()
    # Findings already in the corpus count: a new run adds new kinds and new messages only.
    existing = load_corpus(out) if out.is_dir() else []
    seen = {signature(Verdict(case.kind, None, case.detail)) for case in existing}
    saved_per_kind: Counter[str] = Counter(case.kind for case in existing)
    verdicts: Counter[str] = Counter()
    cases = 0
    next_report = started + 10
    try:
        while time.monotonic() - started < seconds:
            case = generate_case(rng, mutator)
            verdict = sandbox.run(case.updates, complete=case.complete)
            cases += 1
            verdicts[verdict.kind] += 1
            if verdict.kind != OK:
                # Confirm in a fresh process (nothing carried over from earlier cases) and,
                # for a hang, with a far longer bound: a loaded machine can stall one case.
                verdict = run_isolated(
                    case.updates,
                    complete=case.complete,
                    timeout=timeout * (10 if verdict.kind == HANG else 1),
                )
            key = signature(verdict)
            if verdict.kind != OK and key not in seen:
                seen.add(key)
                elapsed = time.monotonic() - started
                if saved_per_kind[verdict.kind] < per_kind:
                    saved_per_kind[verdict.kind] += 1
                    _save(case, verdict, out, pycrdt_version, seed, elapsed, cases)
            if time.monotonic() > next_report:
                next_report += 10
                rate = cases / (time.monotonic() - started)
                print(f"{cases} cases ({rate:.0f}/s): {dict(verdicts)}", file=sys.stderr)
    finally:
        sandbox.close()
    print(f"done: {cases} cases in {time.monotonic() - started:.0f} s: {dict(verdicts)}")
    return sum(saved_per_kind.values()) - len(existing)


def _save(
    case: Case,
    verdict: Verdict,
    out: Path,
    pycrdt_version: str,
    seed: int,
    elapsed: float,
    cases: int,
) -> None:
    # Every probe in a fresh child: a saved case must reproduce on its own.
    with Sandbox(timeout=verdict_timeout(verdict), fresh=True) as sandbox:
        minimiser = Minimiser(sandbox, verdict.kind)
        small = minimiser.minimise(case) if verdict.kind != HANG else case
        final = sandbox.run(small.updates, complete=small.complete)
    if final.kind != verdict.kind:  # flaky under minimisation: keep the original
        small, final = case, verdict
    causal_order = None
    if small.causal is not None:
        causal_order = [small.causal.index(u) for u in small.updates]
    found = {
        "by": "tests.fuzz.mutate",
        "seed": seed,
        "after_seconds": round(elapsed, 1),
        "after_cases": cases,
        "original_bytes": [len(u) for u in case.updates],
        "minimised_bytes": [len(u) for u in small.updates],
        "minimise_probes": minimiser.probes,
    }
    saved = make_case(
        final.kind,
        final.detail,
        small.updates,
        pycrdt=pycrdt_version,
        found=found,
        causal_order=causal_order,
    )
    path = save_case(saved, out)
    sizes = "+".join(str(len(u)) for u in small.updates)
    print(
        f"[{elapsed:6.1f} s, case {cases}] {final.kind} ({sizes} bytes) -> {path}: {final.detail}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.mutate", description=__doc__)
    parser.add_argument("--seconds", type=float, default=120.0, help="how long to fuzz")
    parser.add_argument("--out", type=Path, default=Path("tests/corpus"), help="corpus directory")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--per-kind", type=int, default=3, help="findings kept per kind")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per case")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    print(f"seed {seed}", flush=True)
    fuzz(
        seconds=args.seconds, out=args.out, seed=seed, per_kind=args.per_kind, timeout=args.timeout
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
