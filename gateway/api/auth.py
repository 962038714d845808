"""Who is calling: the tenant behind a client key (Bearer or x-api-key), checked by its sha256 hash."""

from __future__ import annotations

import hashlib
import hmac

from starlette.datastructures import Headers

from gateway.errors import AuthenticationError
from gateway.policy.table import PolicyTable, Tenant

MAX_KEY_LENGTH = 512


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
        raise AuthenticationError("Incorrect API key provided.")
    return key


def authenticate(headers: Headers, table: PolicyTable) -> Tenant:
    """The caller's tenant; 401 unless the key is valid or the policy admits anonymous callers."""
    key = client_key(headers) if not table.open_access else None
    if key is None:
        tenant = table.anonymous_tenant()
        if tenant is None:
            raise AuthenticationError(
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>' or 'x-api-key'."
            )
        return tenant
    tenant = table.tenant_for_key_hash(hashlib.sha256(key.encode()).hexdigest())
    if tenant is None:
        raise AuthenticationError("Incorrect API key provided.")
    return tenant


def is_admin(headers: Headers, admin_key: str | None) -> bool:
    """Constant-time check of the admin key; no admin key configured means no admin access."""
    if not admin_key:
        return False
    auth = headers.get("authorization") or ""
    scheme, _, value = auth.partition(" ")
    given = value.strip() if scheme.lower() == "bearer" else (headers.get("x-api-key") or "")
    return hmac.compare_digest(given.encode(), admin_key.encode())
