from genmesh.rpc import use_fast_event_loop
from genmesh.service import run
from genmesh.services.echo.server import EchoComponent

use_fast_event_loop()
run("echo", EchoComponent)
