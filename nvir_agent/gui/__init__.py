"""The desktop UI (PySide6): the tray agent and the review window.

A client of the engine: it reads the store through ``StoreReader`` in worker
threads and acts through the engine/monitor API. Nothing else in the package
imports this one; the CLI imports it lazily.
"""
