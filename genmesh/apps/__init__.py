"""Custom apps: user code written against `genmesh.App`, served locally by `genmesh run`, deployed
with `genmesh deploy`, and run by app workers in runner processes, routed like any model."""
from genmesh.apps.app import App, AppDefinitionError, AppManifest, endpoint

__all__ = ["App", "AppDefinitionError", "AppManifest", "endpoint"]
