"""sam model family."""
