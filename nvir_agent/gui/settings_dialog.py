"""Settings…: the common keys of agent.toml, validated by the config code and
written back keeping the file's comments."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from nvir_agent import paths
from nvir_agent.config import CONFIG_NAME, Config
from nvir_agent.errors import ConfigError
from nvir_agent.gui import settings_io
from nvir_agent.gui.settings_io import CommonSettings
from nvir_agent.ingest.filenames import PRESET_NAMES


class SettingsDialog(QDialog):
    """Watched folders, naming preset, model file, alert levels, notification URLs."""

    def __init__(self, config: Config, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("NViR Agent — settings")
        self.path = config.source or paths.user_config_dir() / CONFIG_NAME
        self.original = CommonSettings.from_config(config)
        self.saved: Config | None = None
        s = self.original
        self.folders = QListWidget()
        self.folders.addItems(s.folders)
        add, remove = QPushButton("Add…"), QPushButton("Remove")
        add.clicked.connect(self._add_folder)
        remove.clicked.connect(lambda: [self.folders.takeItem(self.folders.row(i))
                                        for i in self.folders.selectedItems()])
        buttons = QVBoxLayout()
        buttons.addWidget(add)
        buttons.addWidget(remove)
        buttons.addStretch(1)
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.folders, 1)
        folder_row.addLayout(buttons)
        self.naming = QComboBox()
        self.naming.addItems(list(PRESET_NAMES))
        self.naming.setCurrentText(s.naming)
        self.model = QLineEdit(s.model_path)
        self.model.setPlaceholderText("empty: the bundled demo model (synthetic training only)")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_model)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model, 1)
        model_row.addWidget(browse)
        self.threshold, self.critical = QDoubleSpinBox(), QDoubleSpinBox()
        for spin, v in ((self.threshold, s.threshold), (self.critical, s.critical)):
            spin.setRange(0.0, 1.5)
            spin.setSingleStep(0.05)
            spin.setValue(v)
        self.urls = QPlainTextEdit("\n".join(s.urls))
        self.urls.setPlaceholderText("one apprise URL per line, e.g. mailtos://…")
        self.urls.setFixedHeight(64)
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color:#b00020")
        box = QDialogButtonBox(QDialogButtonBox.StandardButton.Save
                               | QDialogButtonBox.StandardButton.Cancel)
        box.accepted.connect(self.save)
        box.rejected.connect(self.reject)
        form = QFormLayout(self)
        form.addRow(QLabel(f"Settings file: {self.path}"))
        form.addRow("Watched folders:", folder_row)
        form.addRow("File naming:", self.naming)
        form.addRow("Model file:", model_row)
        form.addRow("Alert below (× vehicle):", self.threshold)
        form.addRow("Critical below:", self.critical)
        form.addRow("Notification URLs:", self.urls)
        form.addRow(self.error)
        form.addRow(box)
        self.setMinimumWidth(560)

    def values(self) -> CommonSettings:
        return CommonSettings(
            folders=[self.folders.item(i).text() for i in range(self.folders.count())],
            naming=self.naming.currentText(), model_path=self.model.text().strip(),
            threshold=round(self.threshold.value(), 3), critical=round(self.critical.value(), 3),
            urls=[u.strip() for u in self.urls.toPlainText().splitlines() if u.strip()])

    def _add_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Watch this acquisition folder")
        if folder:
            self.folders.addItem(folder)

    def _browse_model(self) -> None:
        f, _ = QFileDialog.getOpenFileName(self, "NViR model file", "",
                                           "Model files (*.safetensors *.ckpt *.pt);;All (*)")
        if f:
            self.model.setText(f)

    def save(self) -> None:
        """Validate with the config loader, then write (comments kept)."""
        try:
            doc = settings_io.apply(settings_io.load_document(self.path), self.values())
            self.saved = settings_io.validate(doc, Path(self.path).absolute())
            settings_io.save(doc, self.path)
        except ConfigError as exc:
            self.error.setText(str(exc))
            return
        self.accept()

    def changed(self) -> list[str]:
        return settings_io.changed_keys(self.original, self.values())


def open_settings(config: Config, parent: QWidget | None, *,
                  engine: object | None = None,
                  restart: Callable[[Config], None] | None = None) -> Config | None:
    """Show the dialog; with ``restart`` the running engine applies the change,
    otherwise the user is told a restart of the agent is needed."""
    dlg = SettingsDialog(config, parent)
    if not dlg.exec() or dlg.saved is None:
        return None
    changed = dlg.changed()
    if changed and restart is not None:
        restart(dlg.saved)
        QMessageBox.information(parent, "Settings saved",
                                "Saved. The agent restarts watching with the new settings "
                                f"({', '.join(changed)}); queued images are kept.")
    elif changed:
        QMessageBox.information(parent, "Settings saved",
                                f"Saved {', '.join(changed)}. A running agent applies them "
                                "after a restart (Quit from the tray and start it again).")
    return dlg.saved
