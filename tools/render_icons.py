"""Write the tray icons: SVG sources and PNGs at 16, 32 and 64 px.

Run from the repository root after changing a shape:
    QT_QPA_PLATFORM=offscreen python tools/render_icons.py
States differ by shape first (circle with a dot, circle with dots, triangle,
diamond, two bars, circle with a cross), colour second.
"""

from __future__ import annotations

import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "nvir_agent" / "assets" / "icons"
W = 'stroke="#ffffff" stroke-width="2"'  # a light rim keeps shapes legible on dark panels

ICONS = {
    # watching: an open lens (ring) with a dot
    "watching": f'<circle cx="16" cy="16" r="13" fill="#1b7f79" {W}/>'
                '<circle cx="16" cy="16" r="7" fill="none" stroke="#ffffff" stroke-width="3"/>'
                '<circle cx="16" cy="16" r="2.5" fill="#ffffff"/>',
    # analysing: a disc with three dots (work in progress)
    "analysing": f'<circle cx="16" cy="16" r="13" fill="#2f5fb3" {W}/>'
                 '<circle cx="9" cy="16" r="3" fill="#ffffff"/>'
                 '<circle cx="16" cy="16" r="3" fill="#ffffff"/>'
                 '<circle cx="23" cy="16" r="3" fill="#ffffff"/>',
    # warning alert: a triangle with an exclamation mark
    "alert-warning": f'<path d="M16 2 L30.5 28 L1.5 28 Z" fill="#e8a317" {W} '
                     'stroke-linejoin="round"/>'
                     '<rect x="14" y="10" width="4" height="10" rx="1" fill="#1a1a1a"/>'
                     '<rect x="14" y="22" width="4" height="4" rx="1" fill="#1a1a1a"/>',
    # critical alert: a diamond with an exclamation mark
    "alert-critical": f'<path d="M16 1 L31 16 L16 31 L1 16 Z" fill="#c0262d" {W} '
                      'stroke-linejoin="round"/>'
                      '<rect x="14" y="7" width="4" height="12" rx="1" fill="#ffffff"/>'
                      '<rect x="14" y="21" width="4" height="4" rx="1" fill="#ffffff"/>',
    # paused: a rounded square with two bars
    "paused": f'<rect x="3" y="3" width="26" height="26" rx="5" fill="#6b6b6b" {W}/>'
              '<rect x="10" y="9" width="4.5" height="14" fill="#ffffff"/>'
              '<rect x="17.5" y="9" width="4.5" height="14" fill="#ffffff"/>',
    # error: a disc with a cross (a folder or the model unavailable)
    "error": f'<circle cx="16" cy="16" r="13" fill="#5a1a6e" {W}/>'
             '<path d="M10.5 10.5 L21.5 21.5 M21.5 10.5 L10.5 21.5" stroke="#ffffff" '
             'stroke-width="4" stroke-linecap="round"/>',
}


def svg(body: str) -> str:
    return ('<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32" '
            f'viewBox="0 0 32 32">{body}</svg>\n')


def main() -> int:
    from PySide6.QtCore import QByteArray, Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    _app = QGuiApplication(sys.argv)
    OUT.mkdir(parents=True, exist_ok=True)
    for name, body in ICONS.items():
        text = svg(body)
        (OUT / f"{name}.svg").write_text(text, encoding="utf-8")
        renderer = QSvgRenderer(QByteArray(text.encode()))
        for size in (16, 32, 64):
            img = QImage(size, size, QImage.Format.Format_ARGB32)
            img.fill(Qt.GlobalColor.transparent)
            p = QPainter(img)
            p.setRenderHint(QPainter.RenderHint.Antialiasing)
            renderer.render(p)
            p.end()
            img.save(str(OUT / f"{name}-{size}.png"))
    print(f"wrote {len(ICONS)} icons to {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
