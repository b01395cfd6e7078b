"""genmesh: self-hosted generative inference on a gRPC mesh."""
__version__ = "0.1.0"
