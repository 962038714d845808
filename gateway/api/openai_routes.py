"""OpenAI-compatible model routes: chat, completions, embeddings, one model or all (thin, over the proxy)."""

# No `from __future__ import annotations`: FastAPI reads the dependency of a route from its annotation, which
# names a closure.
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel
from starlette.routing import BaseRoute, Route

from gateway.api.agent_routes import agent_routes
from gateway.api.audio_routes import audio_routes
from gateway.api.image_routes import image_routes
from gateway.api.openapi import OPENAI_ERROR, error_responses
from gateway.api.openapi_security import tenant_of
from gateway.api.proxy import ProxyService
from gateway.errors import NotFoundError
from gateway.policy.table import Tenant
from gateway.providers.base import Endpoint
from gateway.runtime import Runtime


class Model(BaseModel):
    """OpenAI's Model object, for an alias."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "polyroute"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


def model_routes(runtime: Runtime) -> list[BaseRoute]:
    proxy = ProxyService(runtime)
    router = APIRouter(tags=["OpenAI"])
    caller = tenant_of(runtime)

    @router.get("/v1/models", response_model=ModelList, responses=error_responses(OPENAI_ERROR, ("401",)))
    async def models(tenant: Annotated[Tenant, Depends(caller)]) -> ModelList:
        """The aliases the caller may use."""
        created = int(time.time())
        names = runtime.active.table.aliases
        return ModelList(data=[Model(id=name, created=created) for name in names if _allowed(tenant, name)])

    @router.get("/v1/models/{model:path}", response_model=Model,
                responses=error_responses(OPENAI_ERROR, ("401", "404")))
    async def model(model: str, tenant: Annotated[Tenant, Depends(caller)]) -> Model:
        """One alias the caller may use; any other name is the same 404, so that it shows no more than the list."""
        if model not in runtime.active.table.aliases or not _allowed(tenant, model):
            raise NotFoundError(
                f"The model '{model[:200]}' does not exist or you do not have access to it.", param="model"
            )
        return Model(id=model, created=int(time.time()))

    return [
        Route("/v1/chat/completions", proxy.route(Endpoint.CHAT), methods=["POST"]),
        Route("/v1/completions", proxy.route(Endpoint.COMPLETION), methods=["POST"]),
        Route("/v1/embeddings", proxy.route(Endpoint.EMBEDDING), methods=["POST"]),
        *image_routes(proxy),
        *router.routes,
        *agent_routes(runtime, proxy),
        *audio_routes(proxy),
    ]


def _allowed(tenant: Tenant, alias: str) -> bool:
    return tenant.models is None or alias in tenant.models
