"""Small utilities shared by the package (atomic file writes, repository paths)."""
