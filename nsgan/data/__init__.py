"""Data: images in and out (PNG/JPEG/TIFF, big images in bands), tiling, shards and their streams, the defect painter, the bundled texture photos."""
