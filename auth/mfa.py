"""Second factor: TOTP (RFC 6238) codes from an authenticator app.

A code is accepted once: the time step it belongs to is recorded, and a code of
that step or an earlier one is refused, so a code seen over a shoulder or in a
log cannot be replayed within its 30 s.
"""

from __future__ import annotations

import time

import pyotp

ISSUER = "Boardcast"
#: Steps either side of now a code may come from (clock drift of the phone).
DRIFT_STEPS = 1
STEP_SECONDS = 30


def new_secret() -> str:
    """A fresh base32 TOTP secret (160 bits)."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, account: str) -> str:
    """The ``otpauth://`` URI an authenticator app scans (as a QR code)."""
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=ISSUER)


def verify_code(secret: str, code: str, *, last_step: int, now: float | None = None) -> int | None:
    """The time step ``code`` belongs to if it is valid and newer than ``last_step``, else None."""
    cleaned = code.strip().replace(" ", "")
    if len(cleaned) != 6 or not cleaned.isdigit():
        return None
    at = time.time() if now is None else now
    totp = pyotp.TOTP(secret)
    current = int(at // STEP_SECONDS)
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if step > last_step and totp.at(step * STEP_SECONDS) == cleaned:
            return step
    return None
