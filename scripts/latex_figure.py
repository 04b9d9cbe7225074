"""The README picture of a LaTeX-OCR sample: docs/latex-ocr-sample.png.

    python scripts/latex_figure.py [--seed 96] [--out docs/latex-ocr-sample.png] [--scale 2]

Two panels of the same training seed, each with its motif boxes (as evaluated: padded by
the domain's 2 px) outlined in a colour per symbol: the noise-free rendering, then the
model's input (binarised, 25% of the pixels made ink). Under them, the label's LaTeX.
Drawn with Pillow only, as a small palette PNG.
"""

from __future__ import annotations

import argparse
import colorsys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from sparling_core.analysis.evaluate import motif_boxes
from sparling_core.domains import get_domain
from sparling_core.domains import latex_ocr as lo


def _colour(index: int, n: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((index * 7 % n) / n, 0.9, 0.85)
    return int(r * 255), int(g * 255), int(b * 255)


def figure(seed: int, scale: int = 2) -> Image.Image:
    domain = get_domain("latex-ocr")
    sample = domain.sample(seed)
    clean = lo.binarise(lo.render(sample.label)[0])
    h, w = domain.image_shape
    gap, text_h = 6 * scale, 14
    canvas = Image.new("RGB", (w * scale, 2 * h * scale + gap + text_h), "white")
    draw = ImageDraw.Draw(canvas)
    boxes = motif_boxes(domain, sample)
    for panel, ink in enumerate((clean, sample.image)):
        grey = Image.fromarray(((1 - ink) * 255).astype(np.uint8), "L")
        grey = grey.resize((w * scale, h * scale), Image.NEAREST).convert("RGB")
        top = panel * (h * scale + gap)
        canvas.paste(grey, (0, top))
        for symbol, (r0, c0, r1, c1) in boxes:
            r0, c0, r1, c1 = max(r0, 0), max(c0, 0), min(r1, h), min(c1, w)
            draw.rectangle([c0 * scale, top + r0 * scale, c1 * scale - 1, top + r1 * scale - 1],
                           outline=_colour(symbol, len(domain.symbols)), width=1 + panel)
    draw.text((4, 2 * h * scale + gap), f"seed {seed}:  {lo.latex(sample.label)}", fill="black")
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=96)
    parser.add_argument("--out", type=Path, default=Path("docs/latex-ocr-sample.png"))
    parser.add_argument("--scale", type=int, default=2)
    args = parser.parse_args()
    image = figure(args.seed, args.scale)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(colors=64).save(args.out, optimize=True)
    print(f"{args.out}: {image.size[0]}x{image.size[1]}, {args.out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
