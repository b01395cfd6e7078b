from genmesh.service import run
from genmesh.services.router.server import RouterComponent

run("router", RouterComponent)
