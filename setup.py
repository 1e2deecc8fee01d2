"""Packages for setuptools: mfzoo, and the top-level configs/ shipped inside it as
`mfzoo.configs` (found by `mfzoo.cli` whether installed from a wheel or editable)."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["mfzoo", "mfzoo.*"]), "mfzoo.configs"],
    package_dir={"mfzoo.configs": "configs"},
)
