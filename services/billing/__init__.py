"""billing: the usage ledger (exactly once, from JetStream), pricing, usage/log/metrics queries
and API keys."""
