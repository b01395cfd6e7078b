"""genmesh: self-hosted generative inference on a gRPC mesh.

The public surface: `genmesh.App` and `@genmesh.endpoint` to write apps, `genmesh.Client` to call
the mesh over HTTP.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from genmesh.apps.app import App, endpoint

if TYPE_CHECKING:
    from genmesh.apps.client import Client

__version__ = "0.1.0"
__all__ = ["App", "Client", "endpoint"]


def __getattr__(name: str) -> Any:
    # The HTTP client (httpx) loads on first use: runners and services never need it.
    if name == "Client":
        from genmesh.apps.client import Client

        return Client
    raise AttributeError(f"module 'genmesh' has no attribute {name!r}")
