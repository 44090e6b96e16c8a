"""Packaging for lift_nb: everything is read from settings.ini (nbdev 2 layout).

nbdev 2's template imported `pkg_resources`, which current setuptools no longer ships; this
version parses the requirement strings with `packaging` instead.
"""
from configparser import ConfigParser

import setuptools
from packaging.requirements import Requirement

config = ConfigParser(delimiters=["="])
config.read("settings.ini", encoding="utf-8")
cfg = config["DEFAULT"]

for key in "version description keywords author author_email license min_python lib_name user git_url".split():
    assert key in cfg, f"settings.ini is missing `{key}`"

licenses = {"apache2": ("Apache Software License 2.0", "OSI Approved :: Apache Software License")}
statuses = ["1 - Planning", "2 - Pre-Alpha", "3 - Alpha", "4 - Beta", "5 - Production/Stable", "6 - Mature", "7 - Inactive"]
py_versions = "3.10 3.11 3.12 3.13".split()
lic = licenses.get(cfg["license"].lower(), (cfg["license"], None))
min_python = cfg["min_python"]


def _reqs(key):
    "Requirement strings listed under `key` in settings.ini, validated."
    reqs = cfg.get(key, "").split()
    for r in reqs: Requirement(r)  # raises on a malformed entry
    return reqs


requirements = _reqs("requirements")
dev_requirements = _reqs("dev_requirements")
console_scripts = cfg.get("console_scripts", "").split()

setuptools.setup(
    name=cfg["lib_name"].replace("_", "-"),
    license=lic[0],
    classifiers=["Development Status :: " + statuses[int(cfg["status"])],
                 "Intended Audience :: " + cfg["audience"].title(),
                 "Natural Language :: " + cfg["language"].title()]
                + [f"Programming Language :: Python :: {v}" for v in py_versions[py_versions.index(min_python):]]
                + (["License :: " + lic[1]] if lic[1] else []),
    url=cfg["git_url"],
    packages=setuptools.find_packages(include=[cfg["lib_name"], cfg["lib_name"] + ".*"]),
    include_package_data=True,
    install_requires=requirements,
    extras_require={"dev": dev_requirements},
    dependency_links=cfg.get("dep_links", "").split(),
    python_requires=">=" + min_python,
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    zip_safe=False,
    entry_points={"console_scripts": console_scripts, "nbdev": [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
    version=cfg["version"],
    author=cfg["author"],
    author_email=cfg["author_email"],
    description=cfg["description"],
    keywords=cfg["keywords"],
)
