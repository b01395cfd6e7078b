"""The app worker: runs deployed genmesh apps in runner processes and serves genmesh.v1.AppRunner."""
