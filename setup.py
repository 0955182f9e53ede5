"""Packages are found, not listed: each top-level folder below is the package ``offramp.<folder>``
(the user's layout keeps them at the top), with every subpackage under it; ``api/`` is the
package ``offramp`` itself (the Python API: ``import offramp``)."""

from setuptools import find_packages, setup

LAYERS = ("common", "core", "traces", "profiling", "policies", "sim", "analysis")

packages: list[str] = ["offramp"]
package_dir: dict[str, str] = {"offramp": "api"}
for layer in LAYERS:
    for pkg in [layer, *(f"{layer}.{sub}" for sub in find_packages(layer))]:
        packages.append(f"offramp.{pkg}")
        package_dir[f"offramp.{pkg}"] = pkg.replace(".", "/")

setup(packages=packages, package_dir=package_dir)
