"""The videogen worker: text-to-video and image-to-video."""
from genmesh.service import run
from genmesh.services.videogen.server import VideoGenComponent

run("videogen", VideoGenComponent)
