"""For tools that look for a setup.py: pyproject.toml holds all of the metadata.

    python setup.py --version
"""

from setuptools import setup

setup()
