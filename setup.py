"""Lists the packages of the four mapped folders; everything else lives in pyproject.toml."""

from setuptools import find_packages, setup

MAPPED = {
    "recon": "recon",
    "recon.renderers": "renderers",
    "recon.datasets": "datasets",
    "recon.viewer": "viewer",
}

packages = ["recon.configs"]
for name, folder in MAPPED.items():
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(folder)]

setup(packages=sorted(set(packages)))
