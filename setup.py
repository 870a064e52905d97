"""Package discovery for the three source folders (metadata lives in pyproject.toml).

``plugins/`` and ``recipes/`` install as ``cncnn_plugins`` and ``cncnn_recipes``, so that
no bare ``plugins`` package lands in site-packages. setuptools' automatic discovery cannot
rename a folder, and a hand-written package list forgets new subpackages; this walks
each folder instead, so every package with an ``__init__.py`` is installed.
"""
from setuptools import find_packages, setup

SOURCES = {"cncnn_cli": "cncnn_cli", "cncnn_plugins": "plugins", "cncnn_recipes": "recipes"}

setup(
    package_dir=SOURCES,
    packages=[f"{name}.{sub}".rstrip(".") for name, folder in SOURCES.items()
              for sub in ["", *find_packages(folder)]],
)
