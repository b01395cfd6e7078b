"""The llm worker: chat, completions, embeddings and token counting."""
from genmesh.service import run
from genmesh.services.llm.server import LLMComponent

# Guarded: vLLM's engine core starts in a spawned process, which re-imports this module.
if __name__ == "__main__":
    run("llm", LLMComponent)
