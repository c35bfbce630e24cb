"""What PyPI and the napari hub read: version, licence, links, README images, CI matrix.

The napari hub takes a plugin's links, licence and description from PyPI, so these are
checked where they are written (pyproject.toml, README.md, LICENSE) and kept consistent
with what is tested (tox.ini, the GitHub workflow).
"""

from __future__ import annotations

import ast
import configparser
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # the testing extra installs tomli on 3.10
    import tomli as tomllib

import napari_unet

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "test_and_deploy.yml"
OSES = {"ubuntu-latest", "windows-latest", "macos-latest"}


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))


def classifier_pythons(pyproject: dict) -> list[str]:
    """``["3.10", ...]`` from the ``Programming Language :: Python :: 3.x`` classifiers."""
    prefix = "Programming Language :: Python :: "
    found = [c[len(prefix) :] for c in pyproject["project"]["classifiers"] if c.startswith(prefix)]
    return sorted((v for v in found if re.fullmatch(r"3\.\d+", v)), key=_version_key)


def tox_envlist() -> list[str]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "tox.ini", encoding="utf-8")
    return [env.strip() for env in re.split(r"[,\s]+", parser["tox"]["envlist"]) if env.strip()]


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _torch_pin(lines: list[str]) -> str:
    pins = [line.strip() for line in lines if re.match(r"\s*torch\s*==", line)]
    assert len(pins) == 1, pins
    return pins[0].replace(" ", "")


# ------------------------------------------------------------------ version
def test_version_is_dynamic_from_the_package(pyproject):
    project = pyproject["project"]
    assert "version" not in project, "the version is written in pyproject.toml as well"
    assert "version" in project["dynamic"]
    dynamic = pyproject["tool"]["setuptools"]["dynamic"]
    assert dynamic["version"] == {"attr": "napari_unet.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+([.-]?(a|b|rc|dev|post)\d+)?", napari_unet.__version__)


def test_package_init_defines_only_the_version():
    # setuptools reads ``attr`` statically when the module is this simple; anything more
    # (an import) could make a build import torch.
    tree = ast.parse((ROOT / "src" / "napari_unet" / "__init__.py").read_text(encoding="utf-8"))
    body = list(tree.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    assert len(body) == 1 and isinstance(body[0], ast.Assign), ast.dump(tree)
    assert [t.id for t in body[0].targets] == ["__version__"]
    assert isinstance(body[0].value, ast.Constant)


def test_build_reads_the_version_without_importing_anything():
    script = (
        "import sys\n"
        "from setuptools.config.expand import read_attr\n"
        f"version = read_attr('napari_unet.__version__', {{'': 'src'}}, {str(ROOT)!r})\n"
        "imported = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'napari_unet'))\n"
        "print(version, imported)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert result.stdout.strip() == f"{napari_unet.__version__} []", result.stdout + result.stderr


# ------------------------------------------------------------------ links, licence
def test_project_urls_for_the_napari_hub(pyproject):
    urls = pyproject["project"]["urls"]
    for key in ("Bug Tracker", "Documentation", "User Support", "Source Code"):
        assert key in urls, f"project URL {key!r} missing (the napari hub shows it)"
        assert urls[key].startswith("https://"), urls[key]
    assert urls["Bug Tracker"].startswith(urls["Source Code"])


def test_license_file_exists_and_is_listed(pyproject):
    project = pyproject["project"]
    assert project["license"] == "BSD-3-Clause"
    assert "LICENSE" in project["license-files"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("BSD 3-Clause License")
    assert re.search(r"Copyright \(c\) \d{4}, napari-unet developers", text)
    assert "Neither the name of the copyright holder" in text  # clause 3: really BSD-3
    build_requires = pyproject["build-system"]["requires"]
    # license-files in [project] and the SPDX license string need setuptools >= 77.
    assert any(
        re.fullmatch(r"setuptools>=(7[7-9]|[89]\d|\d{3,})(\.\d+)*", r) for r in build_requires
    )


def test_optional_dependencies(pyproject):
    extras = pyproject["project"]["optional-dependencies"]
    bioimageio = {"bioimageio.core>=0.11", "bioimageio.spec>=0.5.12", "pydantic<2.14"}
    assert set(extras["bioimageio"]) == bioimageio
    assert bioimageio <= set(extras["testing"])
    assert "hypothesis>=6.100" in extras["testing"]


# ------------------------------------------------------------------ README
def test_readme_images_are_absolute_urls():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    sources = re.findall(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)", text)
    sources += re.findall(r"<img\s[^>]*src=[\"']([^\"']+)", text, flags=re.I)
    assert sources, "README.md has no images"
    relative = [s for s in sources if not s.startswith("https://")]
    assert not relative, f"relative image links do not render on PyPI or the napari hub: {relative}"
    raw = "https://raw.githubusercontent.com/napari-unet/napari-unet/main/"
    for source in sources:
        if source.startswith(raw):  # the file the link will show is in the repository
            assert (ROOT / source[len(raw) :]).is_file(), source


def test_readme_links_work_on_pypi_and_the_hub():
    """Relative links break where PyPI and the hub show README.md: every link is absolute."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"(?<!!)\[[^\]]*\]\(\s*<?([^)\s>]+)", text)
    targets += re.findall(r"^\[[^\]]+\]:\s*(\S+)", text, flags=re.M)  # reference links
    assert targets, "README.md has no links"
    relative = [t for t in targets if not t.startswith(("https://", "http://", "#", "mailto:"))]
    assert not relative, f"relative links do not work on PyPI or the napari hub: {relative}"
    blob = "https://github.com/napari-unet/napari-unet/blob/main/"
    for target in targets:
        if target.startswith(blob):  # the page the link opens is in the repository
            assert (ROOT / target[len(blob) :]).is_file(), target


# ------------------------------------------------------------------ tox, CI
def test_tox_tests_every_python_the_classifiers_name(pyproject):
    pythons = classifier_pythons(pyproject)
    assert pythons, "no Python 3.x classifiers"
    assert tox_envlist() == ["py" + v.replace(".", "") for v in pythons]
    minimum = re.fullmatch(r">=\s*(3\.\d+)", pyproject["project"]["requires-python"])
    assert minimum and minimum.group(1) == pythons[0]


def test_tox_pins_torch_as_ci_does():
    parser = configparser.ConfigParser()
    parser.read(ROOT / "tox.ini", encoding="utf-8")
    testenv = parser["testenv"]
    constraints = (ROOT / ".ci" / "constraints.txt").read_text(encoding="utf-8").splitlines()
    assert _torch_pin(testenv["deps"].splitlines()) == _torch_pin(constraints)
    assert ".ci/constraints.txt" in testenv["setenv"]
    passenv = set(testenv["passenv"].split())
    assert {"DISPLAY", "XAUTHORITY"} <= passenv


def test_workflow_tests_three_oses_and_every_python(workflow, pyproject):
    test = workflow["jobs"]["test"]
    matrix = test["strategy"]["matrix"]
    assert set(matrix["platform"]) == OSES
    assert [str(v) for v in matrix["python-version"]] == classifier_pythons(pyproject)
    uses = [step.get("uses", "") for step in test["steps"]]
    assert any(u.startswith("tlambert03/setup-qt-libs@") for u in uses)
    assert any(u.startswith("aganders3/headless-gui@") for u in uses)
    commands = "\n".join(step.get("run", "") for step in test["steps"])
    # torch first, pinned by the constraints file, then the package with its test extras.
    assert commands.index("-c .ci/constraints.txt torch") < commands.index('-e ".[testing]"')


def test_workflow_publishes_to_pypi_on_version_tags(workflow):
    # PyYAML reads the key ``on`` as True (YAML 1.1).
    triggers = workflow.get("on", workflow.get(True))
    assert "v*" in triggers["push"]["tags"]
    deploy = workflow["jobs"]["deploy"]
    assert "test" in deploy["needs"]
    assert "refs/tags/v" in deploy["if"]
    assert deploy["permissions"]["id-token"] == "write"  # trusted publishing
    steps = deploy["steps"]
    publish = [
        i
        for i, s in enumerate(steps)
        if s.get("uses", "").startswith("pypa/gh-action-pypi-publish@")
    ]
    build = [i for i, s in enumerate(steps) if "python -m build" in s.get("run", "")]
    assert publish and build and build[0] < publish[0]
    assert "with" not in steps[publish[0]] or "password" not in steps[publish[0]]["with"]
