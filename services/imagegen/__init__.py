"""Image generation service: text-to-image and image-to-image on diffusers pipelines."""
