"""Settings… writes agent.toml back through the config validation, keeping comments."""

from __future__ import annotations

import pytest

from nvir_agent.errors import ConfigError
from nvir_agent.gui import settings_io
from nvir_agent.gui.settings_io import CommonSettings

TEXT = """# my lab's agent
[watch]
folders = ["scope"]  # the imager writes here
naming = "imagexpress"
settle_s = 1.0

[alerts]
threshold = 0.7  # agreed with the study director
"""


def test_settings_round_trip_keeps_comments_and_untouched_keys(tmp_path):
    (tmp_path / "scope").mkdir()
    path = tmp_path / "agent.toml"
    path.write_text(TEXT, encoding="utf-8")
    doc = settings_io.load_document(path)
    config = settings_io.validate(doc, path)
    s = CommonSettings.from_config(config)
    s.critical = 0.3
    s.urls = ["json://localhost"]
    settings_io.apply(doc, s)
    settings_io.validate(doc, path)
    settings_io.save(doc, path)
    text = path.read_text(encoding="utf-8")
    for kept in ("# my lab's agent", "# the imager writes here", "settle_s = 1.0",
                 "threshold = 0.7  # agreed with the study director"):
        assert kept in text
    assert "critical = 0.3" in text and 'urls = ["json://localhost"]' in text
    assert settings_io.changed_keys(CommonSettings.from_config(config), s) == [
        "alerts.critical", "notify.urls"]


def test_invalid_settings_are_refused_by_the_config_code(tmp_path):
    path = tmp_path / "agent.toml"
    doc = settings_io.load_document(path)
    s = CommonSettings(folders=[str(tmp_path / "nowhere")])
    settings_io.apply(doc, s)
    with pytest.raises(ConfigError, match="not an existing folder"):
        settings_io.validate(doc, path)
    s = CommonSettings(threshold=0.3, critical=0.5)
    with pytest.raises(ConfigError, match="critical"):
        settings_io.validate(settings_io.apply(settings_io.load_document(path), s), path)


def test_settings_dialog_saves_through_validation(qtbot, tmp_path):
    from nvir_agent.config import load_config
    from nvir_agent.gui.settings_dialog import SettingsDialog

    (tmp_path / "scope").mkdir()
    path = tmp_path / "agent.toml"
    path.write_text(TEXT, encoding="utf-8")
    dlg = SettingsDialog(load_config(path))
    qtbot.addWidget(dlg)
    dlg.threshold.setValue(0.8)
    dlg.save()
    assert dlg.saved is not None and dlg.saved.alerts.threshold == 0.8
    assert "# agreed with the study director" in path.read_text(encoding="utf-8")
    dlg.critical.setValue(0.9)  # above the threshold: refused, file unchanged
    dlg.save()
    assert "critical" in dlg.error.text()
    assert "critical" not in path.read_text(encoding="utf-8")
