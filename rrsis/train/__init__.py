"""Training: the plain water-land loop (`loop.py`), its runner (`run.py`); Ray Train/Tune wrap the same loop."""
