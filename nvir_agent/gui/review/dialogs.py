"""The operator's dialogs: acknowledge (comment, optional expiry), dismiss as an
artifact (comment), shelve a plate or a compound for a while."""

from __future__ import annotations

import time

from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QPlainTextEdit,
    QWidget,
)

from nvir_agent.store import Alert

DURATIONS = (("4 hours", 4 * 3600), ("1 day", 86400), ("3 days", 3 * 86400),
             ("1 week", 7 * 86400))


class _Form(QDialog):
    def __init__(self, title: str, intro: str, parent: QWidget | None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.form = QFormLayout(self)
        label = QLabel(intro)
        label.setWordWrap(True)
        self.form.addRow(label)
        self.comment = QPlainTextEdit()
        self.comment.setFixedHeight(70)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                        | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.setMinimumWidth(420)

    def finish(self) -> None:
        self.form.addRow(self.buttons)


class AcknowledgeDialog(_Form):
    """Comment and an optional expiry after which the alert returns."""

    def __init__(self, alert: Alert, parent: QWidget | None = None) -> None:
        super().__init__("Acknowledge alert",
                         f"Alert #{alert.id}: {alert.message}", parent)
        self.expiry = QComboBox()
        self.expiry.addItem("never (stays acknowledged)", None)
        for label, seconds in DURATIONS:
            self.expiry.addItem(f"returns after {label}", seconds)
        self.form.addRow("Comment:", self.comment)
        self.form.addRow("Expiry:", self.expiry)
        self.finish()

    def values(self) -> tuple[str, float | None]:
        seconds = self.expiry.currentData()
        return (self.comment.toPlainText().strip(),
                None if seconds is None else time.time() + seconds)


class DismissDialog(_Form):
    """Dismiss as an artifact: the comment says why (bubble, debris, focus …)."""

    def __init__(self, alert: Alert, parent: QWidget | None = None) -> None:
        super().__init__("Dismiss as artifact",
                         f"Alert #{alert.id}: {alert.message}\nSay what the artifact is.",
                         parent)
        self.form.addRow("Comment:", self.comment)
        self.finish()
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        ok.setEnabled(False)
        self.comment.textChanged.connect(
            lambda: ok.setEnabled(bool(self.comment.toPlainText().strip())))

    def values(self) -> str:
        return self.comment.toPlainText().strip()


class ShelveDialog(_Form):
    """Set a plate's or compound's alerts aside for a while."""

    def __init__(self, plate: str, compound: str | None, parent: QWidget | None = None) -> None:
        super().__init__("Shelve alerts",
                         "Alerts of a shelved plate or compound are not notified and are "
                         "greyed in the list until the time runs out.", parent)
        self.what = QComboBox()
        self.what.addItem(f"plate {plate}", ("plate", plate))
        if compound:
            self.what.addItem(f"compound {compound}", ("compound", compound))
        self.duration = QComboBox()
        for label, seconds in DURATIONS:
            self.duration.addItem(f"for {label}", seconds)
        self.form.addRow("Shelve:", self.what)
        self.form.addRow("How long:", self.duration)
        self.form.addRow("Comment:", self.comment)
        self.finish()

    def values(self) -> tuple[str, str, float, str]:
        kind, name = self.what.currentData()
        return kind, name, time.time() + self.duration.currentData(), \
            self.comment.toPlainText().strip()
