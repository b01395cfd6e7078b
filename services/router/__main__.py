from genmesh.rpc import use_fast_event_loop
from genmesh.service import run
from genmesh.services.router.server import RouterComponent

use_fast_event_loop()
run("router", RouterComponent)
