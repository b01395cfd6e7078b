"""The audio worker: speech to text and text to speech."""
from genmesh.service import run
from genmesh.services.audio.server import AudioComponent

run("audio", AudioComponent)
