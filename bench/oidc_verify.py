"""What one OIDC token check costs: ``python -m bench.oidc_verify [--out FILE]``.

Runs the test issuer of ``tests/oidc_issuer.py`` on a loopback port (so it runs from a
checkout), verifies through :class:`auth.oidc.OidcVerifier` with its key set cached, and
times each kind of token ``--count`` times per trial, ``--repeat`` trials after a warm-up:
valid RS256 and ES256 ID tokens, a forged RS256 signature, an HS256 forgery (refused
before any key is used) and a token with an unknown ``kid`` inside the refetch window.
Writes medians of each trial's p50/p99 (microseconds) and the issuer's request counts as
JSON. Nothing here asserts a timing; p99 on a shared 2-core machine mostly measures the
other processes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from auth.oidc import OidcVerifier, TokenRefused
from tests.oidc_issuer import LocalIssuer, SigningKey, mint_hmac


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def time_kind(verifier: OidcVerifier, token: str, count: int) -> list[float]:
    """Seconds per ``verify`` of ``token``, accepted or refused."""
    spent = []
    for _ in range(count):
        start = time.perf_counter()
        with contextlib.suppress(TokenRefused):
            await verifier.verify(token)
        spent.append(time.perf_counter() - start)
    return spent


async def measure(count: int, repeat: int) -> dict[str, Any]:
    async with LocalIssuer() as issuer:
        verifier = OidcVerifier(issuer.settings())
        try:
            tokens = {
                "rs256-valid": issuer.mint(),
                "es256-valid": issuer.mint(alg="ES256"),
                "rs256-bad-signature": issuer.mint(
                    key=SigningKey.generate("RS256", kid=issuer.key().kid)
                ),
                "hs256-forgery": mint_hmac(
                    issuer.claims(), issuer.key().public_pem(), {"kid": issuer.key().kid}
                ),
                "unknown-kid": issuer.mint(key=SigningKey.generate("RS256")),
            }
            for token in tokens.values():  # warm-up: discovery, key set, code paths
                await time_kind(verifier, token, 20)
            trials: dict[str, list[dict[str, float]]] = {kind: [] for kind in tokens}
            for _ in range(repeat):
                for kind, token in tokens.items():
                    spent = await time_kind(verifier, token, count)
                    trials[kind].append(
                        {
                            "p50_us": percentile(spent, 0.5) * 1e6,
                            "p99_us": percentile(spent, 0.99) * 1e6,
                        }
                    )
            results = {
                kind: {
                    "p50_us": round(statistics.median(t["p50_us"] for t in runs), 1),
                    "p99_us": round(statistics.median(t["p99_us"] for t in runs), 1),
                }
                for kind, runs in trials.items()
            }
            return {"tokens": results, "issuer_requests": dict(issuer.requests)}
        finally:
            await verifier.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="verifications per kind and trial")
    parser.add_argument("--repeat", type=int, default=3, help="trials")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/oidc-verify.json"))
    args = parser.parse_args()
    report = {
        "benchmark": "oidc-verify",
        "count": args.count,
        "repeat": args.repeat,
        "python": platform.python_version(),
        **asyncio.run(measure(args.count, args.repeat)),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
