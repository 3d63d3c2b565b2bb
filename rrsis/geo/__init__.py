"""Geospatial building blocks: pure tiling geometry, windowed raster I/O, COG mosaics."""

import os

# GDAL's block cache defaults to 5 % of RAM per process and keeps every block it decoded until full: a read
# worker that streams a 20,000^2 scene would hold over a GB of it. Windows of one tile row overlap the next
# only by the overlap, so a small cache loses little. Set before GDAL first sizes its cache; a user's own
# GDAL_CACHEMAX wins.
os.environ.setdefault("GDAL_CACHEMAX", "64")

from rrsis.geo.tiling import PixelWindow, Tile, plan_tiles, window_transform

__all__ = ["PixelWindow", "Tile", "plan_tiles", "window_transform"]
