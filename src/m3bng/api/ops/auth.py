"""Authentication and scope checks for the ops API (the logic is in ``m3bng.ops.auth``).

Use in a route::

    @router.get("/transactions")
    async def list_transactions(caller: ReadCaller, runtime: RuntimeDep) -> ...

``ReadCaller`` / ``ReplayCaller`` / ``AdminCaller`` are the Principal of a caller holding at least
that scope. The bearer scheme is declared, so the OpenAPI schema and /docs show the lock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from m3bng.api.errors import ApiError, refusal
from m3bng.errors import Unauthenticated
from m3bng.ops.auth import Authenticator, AuthError, Principal, Scope

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="OpsToken",
    description="An ops token (M3BNG_OPS_TOKENS) or a JWT from the identity provider, with a "
    "scope ops:read, ops:replay or ops:admin.",
)


storefront_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="StorefrontToken",
    description="A token with scope storefront:read (M3BNG_OPS_TOKENS entry `NAME storefront:read "
    "sha256:HEX`, or a JWT carrying that scope): BNG's storefront reads. It reaches no ops route, "
    "and no ops token reaches the storefront routes.",
)


def require(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    scheme = storefront_bearer if scope.family == "storefront" else bearer

    # The scheme as a default, not in an Annotated hint: hints are strings here (PEP 563) and
    # FastAPI would look ``scheme`` up among the module's names, not this function's.
    async def dependency(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(scheme),  # noqa: B008
    ) -> Principal:
        return await check_caller(request, scope)

    dependency.__name__ = f"require_{scope.name.lower()}"
    return dependency


async def check_caller(request: Request, scope: Scope) -> Principal:
    """The caller of ``request`` if it holds ``scope`` (401 with a challenge, else 403)."""
    authenticator = request.app.state.runtime.authenticator
    principal = await check_authorization(authenticator, request.headers.get("authorization"), scope)
    request.state.principal = principal
    return principal


async def check_authorization(
    authenticator: Authenticator | None, header: str | None, scope: Scope
) -> Principal:
    """``check_caller`` from the Authorization header alone: the storefront's plain ASGI path
    (api/storefront.py) builds no Request."""
    if authenticator is None:  # a Runtime built by hand, without Runtime.build
        raise RuntimeError("the runtime has no authenticator")
    realm = "m3bng-storefront" if scope.family == "storefront" else "m3bng-ops"
    try:
        principal: Principal = await authenticator.authenticate(header)
    except AuthError as exc:
        challenge = isinstance(exc, Unauthenticated)
        headers = {"WWW-Authenticate": f'Bearer realm="{realm}"'} if challenge else None
        raise refusal(exc, headers=headers) from None
    if not principal.allows(scope):
        raise ApiError(
            403,
            "forbidden",
            f"this needs scope {scope.value}; the token of {principal.name!r} has {principal.scope.value}",
        )
    return principal


ReadCaller = Annotated[Principal, Depends(require(Scope.READ))]
ReplayCaller = Annotated[Principal, Depends(require(Scope.REPLAY))]
AdminCaller = Annotated[Principal, Depends(require(Scope.ADMIN))]
StorefrontCaller = Annotated[Principal, Depends(require(Scope.STOREFRONT_READ))]
