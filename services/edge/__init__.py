"""The edge: the only HTTP surface. OpenAI- and FAL-compatible REST, SSE and WebSocket, files."""
