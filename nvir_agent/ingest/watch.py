"""Folder watching: which files appeared, and when they are complete.

- ``FolderWatcher`` runs one watchdog observer per acquisition folder: the
  native one on local disks, the polling one on network shares (UNC paths,
  SMB/NFS/CIFS mounts) or when configured. Its event handler only filters
  names and enqueues paths; a supervisor thread notices a dead observer, a
  vanished folder, a folder replaced under the same name (renamed away, or
  deleted and made again) and a folder this user cannot read; it restarts the
  observer with back-off, and rescans every folder at start, when it is back
  and periodically (events are lost on buffer overflows and never seen for
  remote writes through inotify).
- ``SettleTracker`` decides when a file is complete: its size and mtime are
  unchanged for ``settle_s`` and it opens for reading. It remembers since when
  a file could not be opened (or looked at), so that one held back for long
  (no permission) is reported.
- ``LinkPolicy`` decides which symbolic links are followed: never one that
  leads back inside a watched folder (what it points to is found under its
  real path, and a link to a parent folder cannot loop), one leading outside
  only when ``watch.follow_links_outside`` is set. A scan enters each real
  folder (device, inode) once, whatever the links.

Nothing here knows about the store or the analysis; the engine wires them.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import getpass
import logging
import os
import stat as stat_mod
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserverVFS

from nvir_agent.ingest.filenames import is_candidate
from nvir_agent.ingest.pathnames import readable

log = logging.getLogger(__name__)

# File-system types that live on another machine: inotify never sees writes
# made there, so such folders are polled.
NETWORK_FS = frozenset({
    "nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "ncpfs", "afs", "9p", "sshfs",
    "fuse.sshfs", "glusterfs", "fuse.glusterfs", "ceph", "fuse.ceph", "davfs", "fuse.davfs2",
    "fuse.rclone", "fuse.s3fs", "lustre", "gpfs", "beegfs", "vboxsf", "webdav",
})

_EVENTS = frozenset({"created", "modified", "moved", "closed"})
MAX_BACKOFF_S = 60.0


def quiet_duplicate_watch_warning() -> None:
    """Keep watchdog's duplicate-watch warning out of the console and the log.

    Its inotify backend warns when a folder made under a recursive watch is given
    its watch twice: the second replaces the first and its events keep coming, so
    there is nothing for an operator to do. (Adding the same filter again replaces it.)
    """
    warnings.filterwarnings("ignore", message="Callback with id .* already exists for watch",
                            category=RuntimeWarning, module=r"watchdog\.observers\.inotify")


def _unescape_mount(field: str) -> str:
    # /proc/mounts escapes space, tab, newline and backslash as octal.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mount_fstype(path: str | os.PathLike[str], mounts_text: str | None = None) -> str | None:
    """File-system type of the mount holding ``path`` (Linux /proc/mounts)."""
    if mounts_text is None:
        try:
            mounts_text = Path("/proc/mounts").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    target = os.path.abspath(os.fspath(path))
    best, best_type = "", None
    for line in mounts_text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        mount = _unescape_mount(parts[1]).rstrip("/") or "/"
        inside = target == mount or target.startswith(mount if mount == "/" else mount + "/")
        if inside and len(mount) >= len(best):
            best, best_type = mount, parts[2]
    return best_type


def _windows_drive_is_remote(path: str) -> bool:  # pragma: no cover - Windows only
    import ctypes

    drive = os.path.splitdrive(os.path.abspath(path))[0]
    if not drive:
        return False
    return ctypes.windll.kernel32.GetDriveTypeW(drive + "\\") == 4  # DRIVE_REMOTE


def is_network_path(
    path: str | os.PathLike[str], *, mounts_text: str | None = None, platform: str | None = None
) -> bool:
    """True for UNC paths, mapped network drives and SMB/NFS/CIFS/… mounts."""
    text = os.fspath(path)
    platform = platform or sys.platform
    if text.startswith(("\\\\", "//")):
        return True
    if platform.startswith("win"):
        return _windows_drive_is_remote(text)
    if platform.startswith("linux") or mounts_text is not None:
        return (mount_fstype(text, mounts_text) or "") in NETWORK_FS
    return False


def observer_mode(configured: str, network: bool) -> str:
    """'native' or 'polling' for a folder, from watch.observer and the mount type."""
    if configured in ("native", "polling"):
        return configured
    return "polling" if network else "native"


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


class LinkPolicy:
    """Which symbolic links under the watched folders are followed.

    A link (to a file or a folder) whose target lies inside a watched folder is
    not followed: the target is found under its own path, so nothing is seen
    twice and a link to a parent folder cannot loop. A link leading outside
    every watched folder is followed only when ``follow_outside`` (a share
    linked in on purpose). A dangling or looping link is never followed.
    """

    def __init__(self, roots: Iterable[str | os.PathLike[str]],
                 follow_outside: bool = False) -> None:
        self.roots = [os.path.abspath(os.fspath(r)) for r in roots]
        self.follow_outside = follow_outside

    def _real_roots(self) -> list[str]:
        # Resolved at each use: a watched folder may appear (or be re-linked) later.
        return [os.path.realpath(r) for r in self.roots]

    def follows(self, link: str) -> bool:
        """Whether the symbolic link ``link`` is followed."""
        try:
            real = os.path.realpath(link, strict=True)
        except (OSError, RuntimeError):  # dangling, or a loop of links
            return False
        if any(_inside(real, root) for root in self._real_roots()):
            return False
        return self.follow_outside

    def admits(self, path: str) -> bool:
        """Whether a path an observer reported is reached without a link this
        policy does not follow (each folder from its watched folder down, and
        the file itself, are checked)."""
        path = os.path.abspath(path)
        for root in self.roots:
            if path != root and _inside(path, root):
                current = root
                for part in os.path.relpath(path, root).split(os.sep):
                    current = os.path.join(current, part)
                    if os.path.islink(current) and not self.follows(current):
                        return False
                return True
        return True


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name (a container without a passwd entry)
        return str(os.getuid()) if hasattr(os, "getuid") else "?"


def _folder_id(path: str) -> tuple[Any, ...] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    if st.st_ino == 0:  # a file system without inode numbers
        return ("path", os.path.realpath(path))
    return (st.st_dev, st.st_ino)


def iter_candidates(
    root: str | os.PathLike[str], patterns: Iterable[str], ignore: Iterable[str] = (),
    *, recursive: bool = True, links: LinkPolicy | None = None,
) -> Iterator[str]:
    """Image files under ``root`` that match the patterns (sorted, depth first).

    Unreadable sub-folders are logged and skipped; folders whose names match
    an ignore pattern are not entered. Symbolic links are followed as
    ``links`` says (default: none); each real folder is entered once, so no
    link (nor a bind mount or junction) can make the scan loop.
    """
    patterns, ignore = list(patterns), list(ignore)
    links = links or LinkPolicy([root])
    visited: set[tuple[Any, ...]] = set()
    stack = [os.fspath(root)]
    while stack:
        folder = stack.pop()
        folder_id = _folder_id(folder)
        if folder_id is not None:
            if folder_id in visited:
                log.debug("Not entering %s again (a link back to a folder already scanned)",
                          readable(folder))
                continue
            visited.add(folder_id)
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            log.warning("Cannot list folder %s: %s", readable(folder), exc.strerror or exc)
            continue
        subfolders = []
        for entry in entries:
            try:
                if entry.is_symlink() and not links.follows(entry.path):
                    continue
                is_dir = entry.is_dir()
            except OSError:
                continue
            if is_dir:
                lower = entry.name.lower()
                if recursive and not any(fnmatch.fnmatchcase(lower, p.lower()) for p in ignore):
                    subfolders.append(entry.path)
            elif is_candidate(entry.name, patterns, ignore):
                yield entry.path
        stack.extend(reversed(subfolders))


def _open_failure(path: str) -> OSError | None:
    """The error opening ``path`` and reading its first byte, or None."""
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        return exc
    return None


def open_error(path: str) -> str | None:
    """Why ``path`` cannot be opened and read, or None when it can."""
    exc = _open_failure(path)
    return None if exc is None else exc.strerror or str(exc)


# Errors that are the path's own (a loop of links, a name too long, a folder where a
# file was expected): waiting does not cure them.
PATH_ERRORS = frozenset({errno.ELOOP, errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR,
                         errno.EINVAL})


def cannot_look(exc: OSError) -> bool:
    """Whether an error looking at a file may pass (no permission, a share away),
    rather than being the path's own."""
    return not isinstance(exc, FileNotFoundError) and exc.errno not in PATH_ERRORS


def _passing(exc: OSError | None) -> str | None:
    """``exc`` in words when it may pass (see :func:`cannot_look`), else None."""
    return exc.strerror or str(exc) if exc is not None and cannot_look(exc) else None


def unreachable(path: str) -> str | None:
    """Why ``path`` cannot be reached now for a reason that is not the file's own —
    its folder is away or unreadable (a share offline, a folder renamed), or this
    user may not open it — or None: it opens, it is not a file, or it was deleted
    from a folder that is still there."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        error = listing_error(os.path.dirname(path) or ".")
        if error is not None:
            return f"its folder cannot be read: {error.strerror or error}"
        if not os.path.isdir(os.path.dirname(path) or "."):
            return "its folder is not there (a share offline, or the folder renamed?)"
        return None  # the folder is there and the file is not: deleted or renamed
    except OSError as exc:
        return _passing(exc)
    if not stat_mod.S_ISREG(st.st_mode):
        return None
    return _passing(_open_failure(path))


def _can_open(path: str) -> bool:
    return open_error(path) is None


def listing_error(folder: str | os.PathLike[str]) -> OSError | None:
    """Why this user cannot list ``folder``, or None when it can (the folder is
    opened, not read through: cheap on a large folder and on a share)."""
    try:
        with os.scandir(folder):
            return None
    except FileNotFoundError:
        return None  # missing is reported as missing
    except OSError as exc:
        return exc


class SettleTracker:
    """Files seen but not yet complete. Not thread-safe: one thread feeds and polls.

    A file settles once its (size, mtime) has not changed for ``settle_s``
    and it opens for reading (on Windows an imager still writing holds it
    locked). An empty file waits ``empty_wait_s`` (imagers create the file
    first and fill it later).
    """

    def __init__(
        self, settle_s: float, *, empty_wait_s: float | None = None,
        can_open: Callable[[str], bool] = _can_open,
    ) -> None:
        self.settle_s = settle_s
        self.empty_wait_s = max(settle_s, 10.0) if empty_wait_s is None else empty_wait_s
        self._can_open = can_open
        self._files: dict[str, tuple[int, float, float]] = {}  # path → size, mtime, since
        self._held: dict[str, float] = {}  # path → since when it cannot be opened or looked at

    def __len__(self) -> int:
        return len(self._files)

    def observe(self, path: str, size: int, mtime: float, now: float) -> None:
        """A file with this size and mtime was seen at ``now``."""
        old = self._files.get(path)
        if old is None or (old[0], old[1]) != (size, mtime):
            self._files[path] = (size, mtime, now)

    def forget(self, path: str) -> None:
        self._files.pop(path, None)
        self._held.pop(path, None)

    def held(self, now: float, longer_than_s: float) -> list[str]:
        """Files that could not be opened (or looked at) for longer than this."""
        return sorted(p for p, since in self._held.items() if now - since > longer_than_s)

    def poll(self, now: float) -> list[tuple[str, int, float]]:
        """Re-stat every tracked file; return (path, size, mtime) of settled ones."""
        settled: list[tuple[str, int, float]] = []
        for path, (size, mtime, since) in list(self._files.items()):
            try:
                st = os.stat(path)
            except FileNotFoundError:
                self.forget(path)  # deleted or renamed: the new name has its own event
                continue
            except OSError:
                self._held.setdefault(path, now)
                continue  # a share hiccup or no permission: try again next time
            if not stat_mod.S_ISREG(st.st_mode):
                self.forget(path)
                continue
            if (st.st_size, st.st_mtime) != (size, mtime):
                self._files[path] = (st.st_size, st.st_mtime, now)
                self._held.pop(path, None)  # it is being written: not held back
                continue
            wait = self.empty_wait_s if size == 0 else self.settle_s
            if now - since < wait:
                continue
            if self._can_open(path):
                self.forget(path)
                settled.append((path, size, mtime))
            else:
                self._files[path] = (size, mtime, now)
                self._held.setdefault(path, now)
        return settled


class _EnqueueHandler(FileSystemEventHandler):
    """Filters event paths by name and hands them over; no I/O here."""

    def __init__(self, sink: Callable[[str], None], accept: Callable[[str], bool]) -> None:
        self._sink = sink
        self._accept = accept

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _EVENTS:
            return
        path = os.fsdecode(event.dest_path if event.event_type == "moved" else event.src_path)
        if event.is_directory:
            if event.event_type in ("created", "moved"):
                self._sink(path)  # a folder arrived: the engine lists it
        elif self._accept(path):
            self._sink(path)


@dataclass(frozen=True)
class FolderStatus:
    """How one acquisition folder is watched right now."""

    folder: str
    mode: str  # native | polling
    network: bool
    health: str  # starting | watching | missing | unreadable | restarting | stopped
    restarts: int = 0
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Folder:
    def __init__(self, path: Path, mode: str, network: bool) -> None:
        self.path = path
        self.mode = mode
        self.network = network
        self.observer: BaseObserver | None = None
        self.health = "starting"
        self.detail = ""
        self.restarts = 0
        self.backoff = 1.0
        self.next_try = 0.0
        self.healthy_since = 0.0
        self.identity: tuple[Any, ...] | None = None  # (st_dev, st_ino) of the folder watched
        self.mount_point = False  # a share mounted right here: unmounted, it is missing

    def present(self) -> bool:
        """The folder is there (and, if a share was mounted on it, still mounted: an
        unmounted share leaves an empty folder behind)."""
        return self.path.is_dir() and (not self.mount_point or os.path.ismount(self.path))

    def status(self) -> FolderStatus:
        return FolderStatus(
            str(self.path), self.mode, self.network, self.health, self.restarts, self.detail
        )


class FolderWatcher:
    """Watches acquisition folders and sends every candidate path to ``sink``.

    ``sink`` receives file paths (filtered by name) and folder paths (a new
    or moved-in folder, to be listed). It is called from watchdog threads and
    from the supervisor thread, so it must be quick and thread-safe
    (``queue.Queue.put``).
    """

    def __init__(
        self, folders: Iterable[str | os.PathLike[str]], sink: Callable[[str], None], *,
        patterns: Iterable[str], ignore: Iterable[str] = (), observer: str = "auto",
        poll_interval_s: float = 5.0, rescan_interval_s: float = 300.0,
        recursive: bool = True, check_interval_s: float = 1.0,
        follow_links_outside: bool = False,
    ) -> None:
        self._sink = sink
        self._patterns = list(patterns)
        self._ignore = list(ignore)
        self._poll_interval_s = poll_interval_s
        self._rescan_interval_s = rescan_interval_s
        self._recursive = recursive
        self._check_interval_s = check_interval_s
        self._folders: list[_Folder] = []
        folders = list(folders)
        self.links = LinkPolicy(folders, follow_links_outside)
        for f in folders:
            path = Path(f)
            network = is_network_path(path)
            self._folders.append(_Folder(path, observer_mode(observer, network), network))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._rescan_now = threading.Event()
        self._thread: threading.Thread | None = None

    # --- public -----------------------------------------------------------------------

    def start(self) -> None:
        """Start observers, then a supervisor thread that scans everything once."""
        for folder in self._folders:
            self._try_start(folder, time.monotonic())
        self._thread = threading.Thread(target=self._supervise, name="nvir-watch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for folder in self._folders:
            self._stop_observer(folder, timeout)
            folder.health = "stopped"

    def rescan(self) -> None:
        """Ask the supervisor for a full rescan now."""
        self._rescan_now.set()

    def status(self) -> list[FolderStatus]:
        with self._lock:
            return [f.status() for f in self._folders]

    def accept(self, path: str) -> bool:
        return is_candidate(path, self._patterns, self._ignore)

    def scan(self, folder: str | os.PathLike[str]) -> int:
        """Send every candidate file under ``folder`` to the sink."""
        n = 0
        for path in iter_candidates(folder, self._patterns, self._ignore,
                                    recursive=self._recursive, links=self.links):
            if self._stop.is_set():
                break
            self._sink(path)
            n += 1
        return n

    def away(self, path: str) -> bool:
        """Whether the watched folder holding ``path`` is away or unreadable now
        (looked at now, not only as the supervisor last saw it)."""
        for f in self._folders:
            if _inside(os.path.abspath(path), os.path.abspath(f.path)):
                with self._lock:
                    health = f.health
                return health in ("missing", "unreadable", "restarting") or not f.present()
        return False

    def observer_of(self, folder: str | os.PathLike[str]) -> BaseObserver | None:
        """The live observer of a folder (tests use it to simulate a crash)."""
        for f in self._folders:
            if f.path == Path(folder):
                return f.observer
        return None

    # --- supervision ------------------------------------------------------------------

    def _make_observer(self, folder: _Folder) -> BaseObserver:
        if folder.mode == "polling":
            # lstat: the snapshot does not walk into linked folders (a link to a
            # parent would make it recurse until the OS refuses); the scans
            # follow the links that LinkPolicy allows.
            return PollingObserverVFS(os.lstat, os.scandir,
                                      polling_interval=self._poll_interval_s)
        quiet_duplicate_watch_warning()
        return Observer()

    def _unreadable(self, folder: _Folder, now: float, error: OSError) -> None:
        if isinstance(error, PermissionError):
            detail = (f"this user ({_user()}) may not read the folder: "
                      f"{error.strerror or error}; check its permissions")
        else:
            detail = (f"the folder cannot be read: {error.strerror or error}; check the "
                      "share and the network")
        if folder.health != "unreadable":
            log.warning("Cannot read the watched folder %s: %s. Images written there wait "
                        "until it can be read again.", folder.path, detail)
        self._set(folder, "unreadable", detail)
        folder.next_try = now + self._check_interval_s

    def _try_start(self, folder: _Folder, now: float) -> bool:
        if not folder.present():
            self._set(folder, "missing", "the share mounted here is not mounted (offline?)"
                      if folder.mount_point else "the folder does not exist (a share offline?)")
            folder.next_try = now + self._check_interval_s
            return False
        error = listing_error(folder.path)
        if error is not None:
            self._unreadable(folder, now, error)
            return False
        identity = _folder_id(str(folder.path))
        observer = self._make_observer(folder)
        try:
            observer.schedule(
                _EnqueueHandler(self._sink, self.accept), str(folder.path),
                recursive=self._recursive,
            )
            observer.start()
        except OSError as exc:
            with contextlib.suppress(Exception):
                observer.stop()
            if folder.mode == "native":
                log.warning(
                    "Native watching of %s failed (%s); polling it every %.0f s instead.",
                    folder.path, exc.strerror or exc, self._poll_interval_s,
                )
                folder.mode = "polling"
                return self._try_start(folder, now)
            self._set(folder, "restarting", f"cannot watch: {exc.strerror or exc}")
            folder.next_try = now + folder.backoff
            folder.backoff = min(folder.backoff * 2, MAX_BACKOFF_S)
            return False
        folder.observer = observer
        folder.identity = identity
        folder.mount_point = folder.mount_point or os.path.ismount(folder.path)
        folder.healthy_since = now
        self._set(folder, "watching", "")
        log.info("Watching %s (%s observer)", folder.path, folder.mode)
        return True

    def _stop_observer(self, folder: _Folder, timeout: float = 5.0) -> None:
        observer, folder.observer = folder.observer, None
        if observer is None:
            return
        with contextlib.suppress(Exception):
            observer.stop()
        with contextlib.suppress(RuntimeError):
            observer.join(timeout)

    def _set(self, folder: _Folder, health: str, detail: str) -> None:
        with self._lock:
            folder.health = health
            folder.detail = detail

    @staticmethod
    def _alive(observer: BaseObserver) -> bool:
        return observer.is_alive() and all(e.is_alive() for e in list(observer.emitters))

    def _check(self, folder: _Folder, now: float) -> None:
        """Restart a dead observer (with back-off), re-watch a returned or replaced
        folder, and tell when a folder cannot be read and when it can again."""
        if folder.observer is not None:
            present = folder.present()
            if present and self._alive(folder.observer):
                if _folder_id(str(folder.path)) != folder.identity:
                    # Renamed away and another made under its name (or deleted and made
                    # again): a native observer still watches the old one.
                    log.warning("Watched folder %s was replaced by another folder of the "
                                "same name; watching the new one.", folder.path)
                    self._stop_observer(folder)
                    self._set(folder, "missing", "the folder was replaced")
                    folder.next_try = now
                    self._check(folder, now)
                    return
                error = listing_error(folder.path)
                if error is not None:
                    self._unreadable(folder, now, error)
                    return
                if folder.health == "unreadable":
                    log.warning("The watched folder %s can be read again; rescanning it.",
                                folder.path)
                    self._set(folder, "watching", "")
                    self.scan(folder.path)
                if now - folder.healthy_since > 60:
                    folder.backoff = 1.0
                return
            self._stop_observer(folder)
            if not present:
                log.warning("Watched folder %s disappeared; watching for its return.",
                            folder.path)
                self._set(folder, "missing", "the share mounted here was unmounted (offline?)"
                          if folder.mount_point else "the folder disappeared (a share offline?)")
                folder.next_try = now + self._check_interval_s
                return
            log.error("The %s observer of %s stopped; restarting it in %.0f s.",
                      folder.mode, folder.path, folder.backoff)
            self._set(folder, "restarting", "the observer stopped unexpectedly")
            folder.next_try = now + folder.backoff
            folder.backoff = min(folder.backoff * 2, MAX_BACKOFF_S)
            return
        if now < folder.next_try:
            return
        was = folder.health
        if self._try_start(folder, now):
            if was in ("missing", "restarting"):
                folder.restarts += 1
                log.warning("Watching %s again (%s); rescanning it.", folder.path, was)
            elif was == "unreadable":
                log.warning("The watched folder %s can be read again; rescanning it.",
                            folder.path)
            self.scan(folder.path)

    def _scan_guarded(self, folder: _Folder) -> int:
        try:
            return self.scan(folder.path)
        except Exception:  # the supervisor must outlive any one folder's failure
            log.exception("Scanning %s failed; the next rescan tries again", folder.path)
            return 0

    def _supervise(self) -> None:
        for folder in self._folders:  # start-up scan: what arrived while the agent was down
            if self._stop.is_set():
                return
            if folder.observer is not None:
                n = self._scan_guarded(folder)
                log.info("Start-up scan of %s: %d image files", folder.path, n)
        next_rescan = time.monotonic() + (self._rescan_interval_s or float("inf"))
        while not self._stop.wait(self._check_interval_s):
            now = time.monotonic()
            for folder in self._folders:
                try:
                    self._check(folder, now)
                except Exception:  # the supervisor must outlive any one folder's failure
                    log.exception("Supervising %s failed", folder.path)
            if self._rescan_now.is_set() or now >= next_rescan:
                self._rescan_now.clear()
                for folder in self._folders:
                    if folder.observer is not None and not self._stop.is_set():
                        self._scan_guarded(folder)
                log.debug("Periodic rescan done")
                next_rescan = time.monotonic() + (self._rescan_interval_s or float("inf"))
