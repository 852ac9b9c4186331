"""Installing the agent on an imaging PC: start at login on Linux, Windows and macOS.

``entries`` holds the exact contents of every autostart entry (pure functions),
``command`` the command line to start and its quoting per OS, ``linux``,
``windows`` and ``macos`` the thin adapters that write them, and ``autostart``
the logic common to all. No Qt, no torch.
"""
