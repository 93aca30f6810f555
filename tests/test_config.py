"""Settings: YAML, environment and flags, with errors that name the file, the setting and the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import load_settings
from service.errors import InvalidRequest


def test_yaml_then_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "profstore.yaml"
    cfg.write_text("listen: 127.0.0.1:5050\nquery_timeout_s: 5\n")
    s = load_settings(cfg, data_dir=tmp_path / "d")
    assert (s.host, s.port, s.query_timeout_s, s.data_dir) == ("127.0.0.1", 5050, 5.0, tmp_path / "d")
    assert load_settings(cfg, listen="0.0.0.0:7000").port == 7000


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROFSTORE_MAX_UNCOMPRESSED_BYTES", "1000")
    assert load_settings().decode_limits.max_uncompressed_bytes == 1000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("listen: nowhere\n", "listen: Value error, listen must be HOST:PORT, got 'nowhere' (got 'nowhere')"),
        ("query_timeout_s: -1\n", "query_timeout_s: Input should be greater than 0 (got -1)"),
        ("retention: 3d\n", "unknown setting(s) retention; known: data_dir, listen"),
        ("- a\n- b\n", "the config must be a mapping of settings"),
    ],
)
def test_bad_config_names_file_setting_and_value(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    with pytest.raises(InvalidRequest) as exc:
        load_settings(cfg)
    assert str(exc.value).startswith(f"{cfg}: ")
    assert message in str(exc.value)
