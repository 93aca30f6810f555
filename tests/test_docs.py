"""The README documents every setting, and only settings that exist."""

from __future__ import annotations

import re

from service.config import AnalysisSettings, Settings
from tests.conftest import REPO


def test_configuration_table_matches_settings() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.M))
    assert documented == set(Settings.model_fields)


def test_analysis_table_matches_settings() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Regression and leak detection", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.M))
    assert documented == set(AnalysisSettings.model_fields)


def test_quick_start_has_the_two_commands() -> None:
    readme = (REPO / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert re.findall(r"^make (\w+)", quick, flags=re.M) == ["run", "test"]
    assert "make test" in (REPO / ".ci" / "run").read_text()
