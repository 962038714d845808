"""Who may call the FastAPI routes, as dependencies: a client key (the caller's tenant) or the admin key.

FastAPI's security classes are used only so that the OpenAPI document shows the key schemes: they never refuse a
request themselves (`auto_error=False`). The checks are polyroute's own (api/auth.py), and what they raise is a
PolyrouteError, which app.py turns into the envelope of the client's protocol.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import Request

from gateway.api.auth import authenticate, is_admin
from gateway.errors import AuthenticationError
from gateway.policy.table import Tenant
from gateway.runtime import Runtime

CLIENT_BEARER = HTTPBearer(
    scheme_name="ClientKey", auto_error=False,
    description="A tenant's API key (any key, or none, when the policy declares no tenants).",
)
CLIENT_API_KEY = APIKeyHeader(
    name="x-api-key", scheme_name="ClientApiKey", auto_error=False,
    description="The same key, in the header Anthropic's clients send it in.",
)
ADMIN_BEARER = HTTPBearer(scheme_name="AdminKey", auto_error=False, description="POLYROUTE_ADMIN_KEY.")

Shown = Annotated[HTTPAuthorizationCredentials | None, Depends(CLIENT_BEARER)]
ShownApiKey = Annotated[str | None, Depends(CLIENT_API_KEY)]
ShownAdmin = Annotated[HTTPAuthorizationCredentials | None, Depends(ADMIN_BEARER)]


def tenant_of(runtime: Runtime) -> Callable[[Request, Shown, ShownApiKey], Awaitable[Tenant]]:
    """The dependency that answers with the caller's tenant, or raises 401."""

    async def caller(request: Request, _bearer: Shown, _api_key: ShownApiKey) -> Tenant:
        return authenticate(request.headers, runtime.active.table)

    return caller


def admin_only(runtime: Runtime) -> Callable[[Request, ShownAdmin], Awaitable[None]]:
    """The dependency of every /admin route: 401 unless the admin key is sent."""

    async def admin(request: Request, _bearer: ShownAdmin) -> None:
        if not is_admin(request.headers, runtime.settings.admin_key):
            raise AuthenticationError(
                "Admin endpoints need 'Authorization: Bearer <POLYROUTE_ADMIN_KEY>'"
                + ("" if runtime.settings.admin_key else " (no admin key is configured on this gateway)")
            )

    return admin
