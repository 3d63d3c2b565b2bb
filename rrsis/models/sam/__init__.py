"""SAM family: `segment_anything` classes built from user weights, embed-once / prompt-many inference."""
