"""The engine: watching, ingest, analysis and storage wired together, and its status. Imports no Qt, torch or OpenCV."""
