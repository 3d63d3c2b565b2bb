"""Typed job configs (omegaconf structured dataclasses) and their loader.

Import `rrsis.config.load` for loading; this package's `__init__` stays light so pure modules can use
`rrsis.config.fields` without pulling in omegaconf.
"""
