"""Only what pyproject.toml cannot say: the top-level ``data/`` folder ships as the package ``radassets.data``.

pyproject's ``packages.find`` cannot add a package whose folder lies outside the package tree, and a
hand-kept package list would silently leave out the next subpackage; so the packages are found here.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["radassets", "radassets.*"]), "radassets.data"],
    package_dir={"radassets.data": "data"},
)
