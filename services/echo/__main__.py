from genmesh.service import run
from genmesh.services.echo.server import EchoComponent

run("echo", EchoComponent)
