"""The imagegen worker: text-to-image and image-to-image."""
from genmesh.service import run
from genmesh.services.imagegen.server import ImageGenComponent

run("imagegen", ImageGenComponent)
