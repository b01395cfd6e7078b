"""Starts the edge: uvicorn serving the ASGI app; SIGTERM drains open connections."""
import uvicorn

from genmesh import logs
from genmesh.settings import Settings
from genmesh.service import start_metrics
from genmesh.services.edge.app import QuietServer, create_app

settings = Settings()
logs.configure("edge", settings.log_level, settings.log_json)
start_metrics(settings)
config = uvicorn.Config(create_app(settings), host=settings.host, port=settings.port or settings.edge_port,
                        log_level="warning", access_log=False, timeout_graceful_shutdown=30, loop="uvloop",
                        http="httptools", lifespan="on",
                        # No `server: uvicorn` line on every answer: nothing reads it, and it names the stack.
                        server_header=False)
QuietServer(config).run()
