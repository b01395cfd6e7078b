"""Starts billing: `python -m genmesh.services.billing` (GENMESH_PORT, 50052 in the mesh)."""
from genmesh.service import run
from genmesh.services.billing.server import BillingComponent

run("billing", BillingComponent)
