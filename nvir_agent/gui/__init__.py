"""The desktop front-end (PySide6): the tray agent and the review window. The only package that imports Qt."""
