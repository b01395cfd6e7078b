"""The app worker: deployed apps, each in its own runner processes, routed like any model."""
from genmesh.service import run
from genmesh.services.apps.server import AppsWorker

run("apps", AppsWorker)
