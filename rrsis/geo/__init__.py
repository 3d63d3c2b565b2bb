"""Geospatial building blocks: pure tiling geometry, windowed raster I/O, COG mosaics."""

import os

# GDAL's block cache defaults to 5 % of RAM per process and keeps every block it decoded until full: a read
# worker that streams a 20,000^2 scene would hold over a GB of it. Tiles are read one after another along a
# tile row, so the cache only has to hold the blocks a tile shares with the previous one (a few 2 MB blocks
# for 512 px blocks of 4 uint16 bands); 32 MB is ample. Whole-scene decimated reads go block by block
# (`rrsis.geo.raster.read_decimated`) and do not depend on it. Set before GDAL first sizes its cache; a
# user's own GDAL_CACHEMAX wins.
os.environ.setdefault("GDAL_CACHEMAX", "32")

from rrsis.geo.tiling import PixelWindow, Tile, plan_tiles, window_transform

__all__ = ["PixelWindow", "Tile", "plan_tiles", "window_transform"]
