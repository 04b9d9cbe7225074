"""Render the DigitCircle digit stamps from FreeMono and store them in the package.

SPEC 2: FreeMono (Debian `fonts-freefont-ttf`) at pixel height 15 into a 10x15 canvas,
thresholded at > 64, cropped to the ink's bounding box plus a 1-pixel empty border.

Rendered with FreeType (freetype-py) at a pixel size of 15 with light hinting: of the
renderings we tried (Pillow at sizes 13-20 and offsets, FreeType with default, no, auto and
light hinting, thresholds 0-80) it is the only one that gives every SPEC height (12) and width.
Ink counts still differ by up to 4 pixels per digit (the font build differs from the
paper's); the script prints the comparison. Needs `pip install freetype-py`.

    python scripts/render_stamps.py            # writes sparling_core/domains/digit_stamps.json
    python scripts/render_stamps.py --check    # compares with the committed file, exit 1 on drift
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

FONT = Path("/usr/share/fonts/truetype/freefont/FreeMono.ttf")
OUT = Path(__file__).resolve().parents[1] / "sparling_core" / "domains" / "digit_stamps.json"
# SPEC 2, for the check printed below.
SPEC_WIDTHS = [9, 7, 8, 9, 8, 9, 8, 8, 7, 8]
SPEC_INK = [30, 16, 21, 23, 25, 26, 28, 16, 27, 31]


def render(digit: str, face) -> np.ndarray:
    import freetype

    face.load_char(digit, freetype.FT_LOAD_RENDER | freetype.FT_LOAD_TARGET_LIGHT)
    bitmap = face.glyph.bitmap
    grey = np.array(bitmap.buffer, dtype=np.uint8).reshape(bitmap.rows, bitmap.pitch)
    canvas = np.zeros((15, 10), dtype=np.uint8)  # the 10x15 canvas (width x height)
    glyph = grey[:15, : min(bitmap.width, 10)]
    canvas[: glyph.shape[0], : glyph.shape[1]] = glyph
    ink = canvas > 64
    rows, cols = np.nonzero(ink)
    crop = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    return np.pad(crop, 1).astype(np.uint8)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed file")
    args = parser.parse_args()
    if not FONT.exists():
        print(f"error: {FONT} not found; install Debian's fonts-freefont-ttf", file=sys.stderr)
        return 2
    import freetype

    face = freetype.Face(str(FONT))
    face.set_pixel_sizes(0, 15)
    stamps = {str(d): render(str(d), face) for d in range(10)}
    for d, s in stamps.items():
        i = int(d)
        print(
            f"{d}: {s.shape[0]}x{s.shape[1]} (spec width {SPEC_WIDTHS[i]}), "
            f"ink {int(s.sum())} (spec {SPEC_INK[i]})"
        )
    mean_ink = np.mean([s.mean() for s in stamps.values()])
    print(f"mean ink fraction {mean_ink:.4f} (spec 0.2504)")
    payload = {
        "source": "FreeMono.ttf via FreeType, pixel size 15, light hinting, 10x15 canvas, "
        "> 64, 1-px border",
        "stamps": {d: s.tolist() for d, s in stamps.items()},
    }
    if args.check:
        committed = json.loads(OUT.read_text())
        same = committed["stamps"] == payload["stamps"]
        print("matches committed stamps" if same else "DIFFERS from committed stamps")
        return 0 if same else 1
    OUT.write_text(json.dumps(payload, separators=(",", ":")) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
