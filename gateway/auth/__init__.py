"""The gateway's side of auth: the guard, the auth endpoints, live revocation, first start."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from auth.accounts import ACCOUNTS_FILENAME, Accounts, AccountStore, FieldCipher
from auth.service import AuthService, AuthSettings

if TYPE_CHECKING:
    from auth.mongo_accounts import MongoAccountsSettings
from persistence.keyring import EncryptionSettings, KeyRing


def open_auth_service(
    data_dir: str,
    settings: AuthSettings | None = None,
    *,
    encryption: EncryptionSettings | None = None,
    store_url: str | None = None,
    mongo: MongoAccountsSettings | None = None,
) -> AuthService:
    """The accounts of ``data_dir``, with a signing key ready.

    With a MongoDB ``store_url`` (the board store's), the accounts live in its database,
    shared by every gateway that names it; otherwise in ``<data_dir>/accounts.sqlite3``.
    E-mail addresses, TOTP secrets and signing keys are encrypted with the at-rest
    key ring unless encryption is off (``BOARDCAST_ENCRYPTION=off``).
    """
    chosen = encryption if encryption is not None else EncryptionSettings.from_environment()
    cipher: FieldCipher | None = None
    if chosen.enabled:
        cipher = KeyRing.open(chosen.key_path(data_dir))
    store: Accounts
    url = (store_url or "").strip()
    if url.startswith(("mongodb://", "mongodb+srv://")):
        # pymongo is imported only by deployments that use MongoDB.
        from auth.mongo_accounts import MongoAccountStore

        store = MongoAccountStore(url, cipher=cipher, settings=mongo)
    else:
        store = AccountStore(os.path.join(data_dir, ACCOUNTS_FILENAME), cipher=cipher)
    service = AuthService(store, settings)
    service.ensure_signing_key()
    return service
