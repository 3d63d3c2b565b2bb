"""Evaluation: `rrsis eval` (water-land metrics, per-chip CSV, panels, Otsu baseline; referring models lazily)."""
