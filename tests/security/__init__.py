"""Hostile-tenant suite: two tenants, escapes, direct worker calls, webhook targets, bad inputs."""
