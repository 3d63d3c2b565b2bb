"""grounding model family."""
