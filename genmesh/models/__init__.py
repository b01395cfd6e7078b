"""Model weights the project can build itself: tiny seeded-random models for offline use and tests."""
