"""The echo worker: the smallest modality service, returning its input through the mesh."""
