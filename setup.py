"""Package discovery for the two source roots: genmesh/ and services/ (as genmesh.services)."""
from setuptools import find_packages, setup

packages = find_packages(include=["genmesh", "genmesh.*"])
packages += ["genmesh.services"] + [f"genmesh.services.{p}" for p in find_packages("services")]
setup(packages=packages)
