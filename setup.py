"""Packages are found, not listed: each top-level folder below is the package ``offramp.<folder>``
(the user's layout keeps them at the top), with every subpackage under it."""

from setuptools import find_packages, setup

LAYERS = ("common", "core", "traces", "profiling", "policies", "sim", "analysis")

packages: list[str] = []
package_dir: dict[str, str] = {}
for layer in LAYERS:
    for pkg in [layer, *(f"{layer}.{sub}" for sub in find_packages(layer))]:
        packages.append(f"offramp.{pkg}")
        package_dir[f"offramp.{pkg}"] = pkg.replace(".", "/")

setup(packages=packages, package_dir=package_dir)
