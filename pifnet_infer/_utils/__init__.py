"""Internal helpers (optional imports, progress bars, device choice)."""
