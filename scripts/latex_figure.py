"""The README picture of a LaTeX-OCR sample: docs/latex-ocr-sample.png.

    python scripts/latex_figure.py [--seed 96] [--out docs/latex-ocr-sample.png] [--scale 2]
    python scripts/latex_figure.py --checkpoint CKPT [--eval EVAL.json] --split test \
        --seed 0 --out docs/latex-ocr-activations.png

Two panels of the same seed, each with its motif boxes (as evaluated: padded by the
domain's 2 px) outlined in a colour per symbol: the noise-free rendering, then the
model's input (binarised, 25% of the pixels made ink). Under them, the label's LaTeX.
With --checkpoint, a third panel: the input again with the model's sparse activations, each
a filled square in the colour of the symbol its channel is assigned to (from --eval, the
JSON that `sparling evaluate --json` wrote, else the checkpoint's metrics, else the best
fit to this image), and each motif's box drawn thick where an assigned channel fired in it
(hit), thin grey where none did (missed); under it the decoded output and the counts.
--seed counts from the split's first seed (test seed 0 is the first test image).
Drawn with Pillow only, as a small palette PNG.
"""

from __future__ import annotations

import argparse
import colorsys
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from sparling_core.analysis.evaluate import motif_boxes
from sparling_core.domains import get_domain
from sparling_core.domains import latex_ocr as lo


def _colour(index: int, n: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((index * 7 % n) / n, 0.9, 0.85)
    return int(r * 255), int(g * 255), int(b * 255)


def _grey(ink: np.ndarray, scale: int) -> Image.Image:
    h, w = ink.shape
    grey = Image.fromarray(((1 - ink) * 255).astype(np.uint8), "L")
    return grey.resize((w * scale, h * scale), Image.NEAREST).convert("RGB")


def _box(draw: ImageDraw.ImageDraw, box, top: int, scale: int, shape, **kw) -> None:
    h, w = shape
    r0, c0, r1, c1 = max(box[0], 0), max(box[1], 0), min(box[2], h), min(box[3], w)
    draw.rectangle([c0 * scale, top + r0 * scale, c1 * scale - 1, top + r1 * scale - 1], **kw)


def figure(seed: int, scale: int = 2, split: str = "train", checkpoint: Path | None = None,
           evaluation: Path | None = None) -> Image.Image:
    domain = get_domain("latex-ocr")
    sample = domain.sample(domain.first_seed(split) + seed, split)
    clean = lo.binarise(lo.render(sample.label)[0])
    h, w = domain.image_shape
    n_sym = len(domain.symbols)
    gap, text_h = 6 * scale, 14
    height = 2 * h * scale + gap + text_h  # two panels and the label
    if checkpoint is not None:  # the activation panel and the output
        height += h * scale + text_h + 2
    canvas = Image.new("RGB", (w * scale, height), "white")
    draw = ImageDraw.Draw(canvas)
    boxes = motif_boxes(domain, sample)
    for panel, ink in enumerate((clean, sample.image)):
        top = panel * (h * scale + gap)
        canvas.paste(_grey(ink, scale), (0, top))
        for symbol, box in boxes:
            _box(draw, box, top, scale, (h, w), outline=_colour(symbol, n_sym), width=1 + panel)
    draw.text((4, 2 * h * scale + gap), f"{split} seed {seed}:   {lo.latex(sample.label)}",
              fill="black")
    if checkpoint is not None:
        _activation_panel(canvas, draw, domain, sample, checkpoint, evaluation,
                          top=2 * h * scale + gap + text_h, scale=scale)
    return canvas


def _activation_panel(canvas, draw, domain, sample, checkpoint: Path,
                      evaluation: Path | None, top: int, scale: int) -> None:
    from sparling_core import api
    from sparling_core.checkpoint import load_checkpoint

    h, w = domain.image_shape
    n_sym = len(domain.symbols)
    model = load_checkpoint(checkpoint).model
    assignment = None
    if evaluation is not None:
        assignment = {int(c): int(s) for c, s in
                      json.loads(evaluation.read_text())["assignment"].items()}
    aligned = api.align(model, sample, assignment=assignment)
    ran = api.run(model, sample)
    canvas.paste(_grey(sample.image, scale), (0, top))
    index = {s: i for i, s in enumerate(domain.symbols)}
    for m in aligned.motifs:
        if m.status == "missed":
            _box(draw, m.box, top, scale, (h, w), outline=(170, 170, 170), width=1)
        else:
            _box(draw, m.box, top, scale, (h, w), outline=_colour(index[m.symbol], n_sym),
                 width=2)
    acts = ran.activations
    for c, r, col in zip(acts.channel, acts.row, acts.col, strict=True):
        symbol = aligned.assignment.get(int(c))
        fill = _colour(index[symbol], n_sym) if symbol is not None else (0, 0, 0)
        x, y = int(col) * scale, top + int(r) * scale
        draw.rectangle([x - 2 * scale, y - 2 * scale, x + 2 * scale, y + 2 * scale],
                       fill=fill, outline="black")
    hits = sum(m.status == "hit" for m in aligned.motifs)
    missed = sum(m.status == "missed" for m in aligned.motifs)
    text = (f"output: {lo.latex(aligned.output.tokens)}   ({len(acts)} activations; "
            f"{hits} of {len(aligned.motifs)} symbols hit, {missed} missed)")
    draw.text((4, top + h * scale + 2), text, fill="black")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=96)
    parser.add_argument("--out", type=Path, default=Path("docs/latex-ocr-sample.png"))
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--split", default="train", choices=("train", "val", "test"))
    parser.add_argument("--checkpoint", type=Path, help="add the activation panel")
    parser.add_argument("--eval", type=Path, help="its evaluation JSON (for the assignment)")
    args = parser.parse_args()
    image = figure(args.seed, args.scale, args.split, args.checkpoint, args.eval)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(colors=64).save(args.out, optimize=True)
    print(f"{args.out}: {image.size[0]}x{image.size[1]}, {args.out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
