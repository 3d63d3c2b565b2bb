"""Geospatial building blocks: pure tiling geometry, windowed raster I/O, COG mosaics."""

from rrsis.geo.tiling import PixelWindow, Tile, plan_tiles, window_transform

__all__ = ["PixelWindow", "Tile", "plan_tiles", "window_transform"]
