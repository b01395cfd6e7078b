"""Starts billing: `python -m genmesh.services.billing` (GENMESH_PORT, 50052 in the mesh)."""
from genmesh.rpc import use_fast_event_loop
from genmesh.service import run
from genmesh.services.billing.server import BillingComponent

use_fast_event_loop()
run("billing", BillingComponent)
