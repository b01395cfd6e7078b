"""The router: catalog, worker registry, placement, the job lifecycle and the durable queue."""
