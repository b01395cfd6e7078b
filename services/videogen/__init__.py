"""Video generation service: text-to-video on diffusers pipelines."""
