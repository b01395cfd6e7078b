"""The edge's view of the model catalog: the router's ListModels (cached a few seconds) plus the
OpenAI-style aliases (`default_for`) from the catalog file, so OpenAI routes can name the right
model and task before calling a typed RPC; and how a model's availability reads in JSON (the
OpenAI list's extra fields, and FAL's model-search shape)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from genmesh.catalog import Catalog
from genmesh.errors import InvalidArgument, NotFound
from genmesh.settings import Settings
from genmesh.v1 import router_pb2

CACHE_TTL_S = 5.0


@dataclass(frozen=True)
class Resolved:
    name: str               # as the caller wrote it
    model: router_pb2.Model  # the catalog entry it names


class CatalogView:
    def __init__(self, mesh, settings: Settings) -> None:  # noqa: ANN001 - MeshClient
        self.mesh = mesh
        self.aliases: dict[str, str] = {}
        try:
            for spec in Catalog.load(settings.catalog_path):
                for alias in spec.default_for:
                    self.aliases.setdefault(alias, spec.id)
        except (OSError, ValueError):
            self.aliases = {}
        self._models: dict[str, router_pb2.Model] = {}
        self._until = 0.0

    async def models(self, authorization: str, *, fresh: bool = False) -> dict[str, router_pb2.Model]:
        """Every model by id; a fresh call also proves the caller's key to the router."""
        if fresh or time.monotonic() >= self._until:
            resp = await self.mesh.unary(self.mesh.router.ListModels, router_pb2.ListModelsRequest(),
                                         authorization, timeout=10)
            self._models = {m.id: m for m in resp.models}
            self._until = time.monotonic() + CACHE_TTL_S
        return self._models

    async def resolve(self, name: str, authorization: str, *, field: str = "model") -> Resolved:
        models = await self.models(authorization)
        target = models.get(name) or models.get(self.aliases.get(name, ""))
        if target is None:
            raise NotFound(f"The model '{name}' does not exist; GET /v1/models lists them",
                           field=field, code="model_not_found")
        return Resolved(name, target)

    async def for_task(self, name: str, tasks: tuple[str, ...], authorization: str,
                       *, route: str, field: str = "model") -> Resolved:
        """The model `name` names for one of `tasks`; a chat model named on /v1/completions
        becomes its `<id>/completions` sibling when the catalog has one."""
        found = await self.resolve(name, authorization, field=field)
        if found.model.task in tasks:
            return found
        models = await self.models(authorization)
        for suffix in ("completions",):
            sibling = models.get(f"{found.model.id}/{suffix}")
            if sibling is not None and sibling.task in tasks:
                return Resolved(name, sibling)
        raise InvalidArgument(f"'{name}' is a {found.model.task} model; {route} needs a "
                              f"{' or '.join(tasks)} model", field=field, code="model_not_supported")


def availability_json(m: router_pb2.Model) -> dict[str, Any]:
    """Whether the model can run on this mesh now, why not, and where its weights come from."""
    return {"available": m.available, "unavailable_reason": m.unavailable_reason or None,
            "description": m.description, "weights": m.weights,
            "weights_source": m.weights_source or None}


def wants_fal_models(query: dict[str, str], authorization: str) -> bool:
    """FAL's model search (`GET /v1/models`) shares OpenAI's path: FAL clients authenticate with
    `Key <secret>` and filter with `endpoint_id`, `category`, `q` or `status`."""
    return authorization.startswith("Key ") or any(
        name in query for name in ("endpoint_id", "category", "q", "status"))


def fal_models_json(models: list[router_pb2.Model], query: dict[str, Any]) -> dict[str, Any]:
    """FAL's model-search response: `{"models": [{"endpoint_id", "metadata": {...}}], ...}`;
    `status` is "active" for a model that can run here and "unavailable" otherwise."""
    wanted = set(query.get("endpoint_id") or [])
    category, text = query.get("category"), (query.get("q") or "").lower()
    out = []
    for m in models:
        if (wanted and m.id not in wanted) or (category and m.task != category):
            continue
        if text and text not in m.id.lower() and text not in m.description.lower():
            continue
        status = "active" if m.available else "unavailable"
        if query.get("status") and query["status"] != status:
            continue
        out.append({"endpoint_id": m.id, "metadata": {
            "display_name": m.id.split("/", 1)[-1], "category": m.task, "status": status,
            "description": m.description, "unavailable_reason": m.unavailable_reason or None,
            "weights_source": m.weights_source or None}})
    return {"models": out, "next_cursor": None, "has_more": False}
