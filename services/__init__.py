"""The mesh's processes, one package each: `python -m genmesh.services.<name>` starts one."""
