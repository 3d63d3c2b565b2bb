"""danet model family."""
