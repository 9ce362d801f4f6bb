"""What a release is made of: the licence, the changelog, one version everywhere, and the
image's hash-pinned lock covering pyproject.toml's dependencies."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import proxy
from tests.support import REPO

PYPROJECT: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text())
VERSION: str = PYPROJECT["project"]["version"]
#: The image's Python: python:3.11-slim, Linux (the Dockerfile's PYTHON_IMAGE).
IMAGE_ENVIRONMENT = {
    "python_version": "3.11",
    "python_full_version": "3.11.9",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}


def locked() -> dict[str, tuple[Version, Marker | None, list[str]]]:
    """requirements.lock: each package's pinned version, marker and hashes."""
    text = (REPO / "requirements.lock").read_text()
    entries: dict[str, tuple[Version, Marker | None, list[str]]] = {}
    for block in re.split(r"\n(?=\S)", text):
        if block.startswith("#") or not block.strip():
            continue
        head, *rest = block.split("\\\n")
        requirement = Requirement(head.strip())
        (specifier,) = requirement.specifier
        assert "==" == specifier.operator, f"{requirement.name} is not pinned"
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", "".join(rest))
        entries[canonicalize_name(requirement.name)] = (
            Version(specifier.version),
            requirement.marker,
            hashes,
        )
    return entries


def test_one_version_everywhere() -> None:
    """pyproject.toml's version is the image label's, the chart's appVersion, the newest
    changelog release, and what jargate --version reports."""
    labels = DockerfileParser(path=str(REPO / "Dockerfile")).labels
    chart = yaml.safe_load((REPO / "helm" / "jargate" / "Chart.yaml").read_text())
    changelog = (REPO / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## \[([^\]]+)\]", changelog, flags=re.MULTILINE)
    assert VERSION == labels["org.opencontainers.image.version"]
    assert VERSION == chart["appVersion"]
    assert ["Unreleased", VERSION] == releases[:2]
    assert VERSION == proxy.__version__


def test_changelog_follows_keep_a_changelog() -> None:
    """Releases newest first with an ISO date, only Keep a Changelog's section names, and a
    link for every release."""
    changelog = (REPO / "CHANGELOG.md").read_text()
    dated = re.findall(r"^## \[([^\]]+)\] - (\d{4}-\d{2}-\d{2})$", changelog, flags=re.MULTILINE)
    versions = [Version(v) for v, _ in dated]
    assert versions == sorted(versions, reverse=True)
    assert [d for _, d in dated] == sorted((d for _, d in dated), reverse=True)
    sections = set(re.findall(r"^### (.+)$", changelog, flags=re.MULTILINE))
    assert sections <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}
    links = set(re.findall(r"^\[([^\]]+)\]: \S+$", changelog, flags=re.MULTILINE))
    assert {"Unreleased", *(v for v, _ in dated)} == links


def test_license_is_the_apache_2_text() -> None:
    """LICENSE holds the Apache License 2.0 in full, the licence pyproject and the image name."""
    text = (REPO / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert 9 == len(re.findall(r"^\s+\d\. [A-Z]", text, flags=re.MULTILINE))  # sections 1-9
    assert "Apache-2.0" == PYPROJECT["project"]["license"]
    labels = DockerfileParser(path=str(REPO / "Dockerfile")).labels
    assert "Apache-2.0" == labels["org.opencontainers.image.licenses"]


@pytest.mark.parametrize("dependency", PYPROJECT["project"]["dependencies"])
def test_lock_covers_each_dependency(dependency: str) -> None:
    """Each of pyproject's dependencies (and its extras' packages) is locked at a version it
    allows, with hashes, for the image's Python."""
    requirement = Requirement(dependency)
    entries = locked()
    name = canonicalize_name(requirement.name)
    assert name in entries, f"{requirement.name} is not in requirements.lock"
    version, marker, hashes = entries[name]
    assert requirement.specifier.contains(version, prereleases=True), (
        f"requirements.lock pins {name}=={version}, pyproject asks {requirement.specifier}"
    )
    assert hashes
    if requirement.marker is None or requirement.marker.evaluate(IMAGE_ENVIRONMENT):
        assert marker is None or marker.evaluate(IMAGE_ENVIRONMENT), f"{name} skipped in the image"
    if "hiredis" in requirement.extras:
        assert "hiredis" in entries


def test_lock_holds_nothing_but_pins_with_hashes() -> None:
    """Every lock entry is pinned with at least one sha256 hash (pip --require-hashes
    refuses anything else); no index or find-links lines that could redirect the image."""
    text = (REPO / "requirements.lock").read_text()
    assert not re.search(r"^\s*--(index-url|extra-index-url|find-links|trusted-host)", text, re.M)
    entries = locked()
    assert all(hashes for _, _, hashes in entries.values())
    assert len(PYPROJECT["project"]["dependencies"]) < len(entries)  # the transitive ones too
