"""The llm worker: chat, completions, embeddings and token counting."""
from genmesh.service import run
from genmesh.services.llm.server import LLMComponent

run("llm", LLMComponent)
