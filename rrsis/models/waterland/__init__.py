"""waterland model family."""
