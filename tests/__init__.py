"""genmesh tests: unit, integration (real NATS and Postgres), e2e, faults, fuzz, multihost."""
import os

# Before anything imports grpc: the tests fork servers while gRPC threads run (see genmesh/__init__).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
