"""A minimal writer of tiled, uncompressed RGB TIFFs (Pillow writes strips only), for the reader tests."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

SHORT, LONG = 3, 4


def write_tiled_tiff(path: Path, pixels: np.ndarray, tile: int = 16) -> Path:
    """``pixels`` ``(H, W, 3)`` uint8 as a little-endian baseline TIFF with ``tile`` x ``tile`` tiles."""
    height, width, _ = pixels.shape
    rows, cols = -(-height // tile), -(-width // tile)
    padded = np.zeros((rows * tile, cols * tile, 3), dtype=np.uint8)
    padded[:height, :width] = pixels
    tiles = [padded[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile].tobytes()
             for r in range(rows) for c in range(cols)]
    count = len(tiles)
    entries = 11
    ifd_offset = 8
    extra = ifd_offset + 2 + 12 * entries + 4  # where the out-of-line values start
    bits_at, offsets_at, counts_at = extra, extra + 6, extra + 6 + 4 * count
    data_at = counts_at + 4 * count
    tile_offsets = [data_at + i * len(tiles[0]) for i in range(count)]

    def entry(tag, kind, n, value):
        inline = struct.pack("<HH", value, 0) if kind == SHORT and n == 1 else struct.pack("<I", value)
        return struct.pack("<HHI", tag, kind, n) + inline

    ifd = [entry(256, LONG, 1, width), entry(257, LONG, 1, height), entry(258, SHORT, 3, bits_at),
           entry(259, SHORT, 1, 1), entry(262, SHORT, 1, 2), entry(277, SHORT, 1, 3), entry(284, SHORT, 1, 1),
           entry(322, LONG, 1, tile), entry(323, LONG, 1, tile),
           entry(324, LONG, count, offsets_at) if count > 1 else entry(324, LONG, 1, tile_offsets[0]),
           entry(325, LONG, count, counts_at) if count > 1 else entry(325, LONG, 1, len(tiles[0]))]
    out = b"II" + struct.pack("<HI", 42, ifd_offset) + struct.pack("<H", entries) + b"".join(ifd) + struct.pack("<I", 0)
    out += struct.pack("<3H", 8, 8, 8)
    out += struct.pack(f"<{count}I", *tile_offsets) + struct.pack(f"<{count}I", *([len(tiles[0])] * count))
    Path(path).write_bytes(out + b"".join(tiles))
    return Path(path)
