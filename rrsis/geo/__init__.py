"""Geospatial building blocks: pure tiling geometry, windowed raster I/O, COG mosaics."""

import os

# GDAL's block cache defaults to 5 % of RAM per process and keeps every block it decoded until full: a read
# worker that streams a 20,000^2 scene would hold over a GB of it. Reads go tile by tile along a tile row,
# so only the block column shared with the previous tile is read again from the cache: 32 MB (16 blocks of
# 512^2 x 4 bands x uint16) holds that many times over. Set before GDAL first sizes its cache; a user's own
# GDAL_CACHEMAX wins.
os.environ.setdefault("GDAL_CACHEMAX", "32")

from rrsis.geo.tiling import PixelWindow, Tile, plan_tiles, window_transform

__all__ = ["PixelWindow", "Tile", "plan_tiles", "window_transform"]
