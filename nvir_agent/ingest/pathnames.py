"""File names as the operating system gives them, as the store keeps them, and
as people read them.

A name on a Linux mount of a Windows share may not be valid UTF-8 (a Latin-1
``É`` is the single byte ``C9``). Python hands such a name over with each
undecodable byte as a lone surrogate (``os.fsdecode``), which opens the file
fine but cannot be written to SQLite, a UTF-8 log file or the console.

- ``readable`` gives the form people see: undecodable bytes as ``\\xNN``
  (``Plate_\\xc9_B03_s1_w1.tif``); valid names are returned unchanged.
- ``to_db`` / ``from_db`` keep the name losslessly in the store: a valid
  name as text, any other as its exact bytes (an SQLite BLOB, which never
  equals a text value, so two names can never collide).

Pure functions: nothing here touches the file system.
"""

from __future__ import annotations

import os


def _is_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def readable(text: str | bytes) -> str:
    """``text`` with undecodable bytes shown as ``\\xNN`` (valid text unchanged)."""
    if isinstance(text, bytes):
        return text.decode("utf-8", "backslashreplace")
    if _is_text(text):
        return text
    try:
        raw = os.fsencode(text)
    except UnicodeEncodeError:  # surrogates that did not come from a file name
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def to_db(path: str) -> str | bytes:
    """The value the store keeps for a path: text, or the name's bytes when it is
    not valid UTF-8."""
    if _is_text(path):
        return path
    try:
        return os.fsencode(path)
    except UnicodeEncodeError:  # surrogates no file-system call gave: keep them anyway
        return path.encode("utf-8", "surrogatepass")


def from_db(value: str | bytes) -> str:
    """The path (as ``open`` and ``os.stat`` take it) of a stored value."""
    return os.fsdecode(value) if isinstance(value, bytes) else value
