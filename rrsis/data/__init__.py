"""Water-land datasets: Sen1Floods11, SNOWED and generic GeoTIFF pairs, read by window."""
