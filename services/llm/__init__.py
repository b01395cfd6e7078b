"""The language worker: chat and completions with continuous batching, structured output and tool
calls (engine.py and its modules), embeddings (embeddings.py) and vision-language chat (vision.py).
"""
