"""The review window and its views (alert list, plate view, well view, plots)."""
