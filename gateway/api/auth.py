"""Who is calling: the tenant behind a client key (Bearer or x-api-key), found by its sha256 digest."""

from __future__ import annotations

import hashlib
import hmac

from starlette.datastructures import Headers

from gateway.errors import AuthenticationError
from gateway.policy.table import PolicyTable, Tenant, hash_api_key

MAX_KEY_LENGTH = 512
_BAD_KEY = "Incorrect API key provided."  # never echoes what was sent


def client_key(headers: Headers) -> str | None:
    """The key a client sent, from `Authorization: Bearer <key>` or `x-api-key`; None if neither."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthenticationError("The Authorization header must be 'Bearer <key>'.")
        key = value.strip()
    else:
        key = (headers.get("x-api-key") or "").strip()
        if not key:
            return None
    if len(key) > MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise AuthenticationError(_BAD_KEY)
    return key


def authenticate(headers: Headers, table: PolicyTable) -> Tenant:
    """The caller's tenant; 401 unless the key is valid or the policy admits anonymous callers.

    Keys are looked up by digest and never compared as text, which is what keeps the check constant-time: the
    lookup's timing depends only on the SHA-256 of what the caller sent, and learning how a digest the caller
    computed relates to a stored one does not help to find a key that hashes to it. A `compare_digest` on the digest
    found would add nothing, since the lookup already matched it exactly.

    A key that is sent but wrong is refused even when an anonymous tenant exists: a mistyped key must not quietly
    downgrade a caller to the anonymous tenant's models and limits.
    """
    key = client_key(headers) if not table.open_access else None
    if key is None:
        tenant = table.anonymous_tenant()
        if tenant is None:
            raise AuthenticationError(
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>' or 'x-api-key'."
            )
        return tenant
    tenant = table.tenant_for_key_hash(hash_api_key(key))
    if tenant is None:
        raise AuthenticationError(_BAD_KEY)
    return tenant


def is_admin(headers: Headers, admin_key: str | None) -> bool:
    """Constant-time check of the admin key (as digests, so that not even its length shows); none configured, none."""
    if not admin_key:
        return False
    auth = headers.get("authorization") or ""
    scheme, _, value = auth.partition(" ")
    given = value.strip() if scheme.lower() == "bearer" else (headers.get("x-api-key") or "")
    if not given:
        return False
    return hmac.compare_digest(_digest(given), _digest(admin_key))


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()
