"""The dependency floors in pyproject.toml keep out the versions with known holes."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
REPO = Path(__file__).resolve().parents[1]
DEPS = {Requirement(d).name: Requirement(d).specifier for d in tomllib.loads(
    (REPO / "pyproject.toml").read_text())["project"]["dependencies"]}


@pytest.mark.parametrize(("package", "version", "why"), [
    ("torch", "2.5.1", "CVE-2025-32434: torch.load(weights_only=True) runs code"),
    ("torch", "2.9.1", "CVE-2026-24747: the weights_only unpickler corrupts memory"),
    ("torch", "2.10.0", "PYSEC-2026-139"),
    ("torchvision", "0.25.0", "the pair of torch 2.10"),
    ("pyarrow", "14.0.0", "CVE-2023-47248: code execution reading IPC/Parquet"),
    ("ray", "2.51.0", "CVE-2025-62593: RCE through a browser against a local dashboard"),
])
def test_known_vulnerable_versions_are_refused(package, version, why):
    assert version not in DEPS[package], f"{package} {version} is admitted ({why})"


@pytest.mark.parametrize(("package", "version"), [
    ("torch", "2.14.1"), ("torchvision", "0.29.1"),  # the builds this project is tested with
])
def test_the_tested_builds_are_admitted(package, version):
    assert version in DEPS[package]
