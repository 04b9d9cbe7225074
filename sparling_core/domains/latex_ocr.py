"""LaTeX-OCR (SPEC 6): read the token sequence of a rendered formula from a noisy image.

A seed draws, from one `np.random.default_rng(seed)`:

1. a token length uniform in 1..30, then formulas from the grammar below until one has
   exactly that many tokens (rejection sampling; an attempt is abandoned as soon as it
   cannot end at that length, which leaves the distribution unchanged);
2. nothing for the rendering, which is deterministic: matplotlib's mathtext with its own
   Computer Modern fonts (BaKoMa, shipped with matplotlib: no TeX, no system fonts), size
   10 at 200 dpi, centre-cropped or padded to 120 tall x 360 wide like the reference
   (a 3 pt border around the formula's box, then symmetric crop or pad);
3. the noise: ink where the rendered darkness is >= 0.25, then every pixel made ink with
   probability 0.25 (SPEC 6, the reference's `set_false` technique in ink terms).

Grammar (the reference's `latex_cfg`, kavigupta/sparling-repro latex_decompiler/latex_cfg.py;
weights in brackets, unbracketed productions weigh 1)::

    start  -> expr | [.25] \\frac{ start }{ start }
    expr   -> term | [.25] term + expr
    term   -> atom | [.25] atom term
    atom   -> script | [.25] \\left( expr \\right)
    script -> sym | sym ^{ sym } | sym _{ sym }
    sym    -> 0 1 2 3 4 5 6 7 8 9 x y z a b c

SPEC 6 writes atom and script as one rule (`atom -> sym | sym ^{ sym } | sym _{ sym } |
[.25] \\left( expr \\right)`), which would make a parenthesis 0.25 / 3.25 of the atoms;
the reference nests them (`combined_symbol`), so a parenthesis is 0.25 / 1.25 = 20% of the
atoms. We follow the reference (`ATOM_PAREN_WEIGHT`): it gives 9.74 motifs per image
(2,000 seeds), the reference 9.64 (ltx-2dc3: `done_at_density = 9.64 / (120 * 360 * 10)`);
the SPEC's flattened weights would give 8.80 (600 seeds).

Tokens (the vocabulary) are the terminals, named by their LaTeX where that is unique:
`\\frac{` `}{` `}` open, split (the fraction bar) and close a fraction, `\\left(` `\\right)` a
parenthesis, `^{` `^}` a superscript, `_{` `_}` a subscript, `+`, and the 16 symbols.
`latex(label)` gives the LaTeX source. Motifs are the 20 rendered symbols: the 16
characters, `+`, `(`, `)` and the fraction bar (symbol `FRACTION_BAR`), each with the box
of its own ink in the final image (end-exclusive; evaluation pads it by 2 px), from the
mathtext layout: every glyph is rasterised on its own, so its box is exact even where
glyphs overlap. The reference boxes (re-render with the token in its own hue) are the
pixels with saturation > 0.1; ours are the glyph's pixels with coverage > 0.1.

\\displaystyle: mathtext has no \\displaystyle, and its \\frac shrinks the numerator and
denominator one size at every level. TeX in display style keeps the outermost fraction's
parts at full size and never goes below scriptscript (0.5). So a fraction at depth 1 is
rendered as \\dfrac (no shrink), at depths 2 and 3 as \\frac (0.7, then 0.49 = TeX's 7 pt and
5 pt), and deeper again as \\dfrac (stays at 0.49). One difference remains: a super- or
subscript inside a depth >= 3 fraction is drawn at 0.34 where TeX stops at 0.5 (rare).

Size check: at size 10 and 200 dpi a full-size "7" has 19 rows of ink (darkness >= 0.25),
like pdflatex's 10 pt Computer Modern at 200 dpi (cap height ~6.8 pt ~ 19 px); measured
by `glyph_ink_height("7")` and asserted in tests/test_latex_ocr.py.

Speed: parsing the LaTeX string with mathtext's pyparsing grammar takes 10-30 ms a
formula, so the layout is built by calling the parser's own actions in the order the
grammar would (`_Renderer._build`; the same boxes to 1e-6 px, tested), ~2-3 ms. A sample
(tokens, layout, rasterising, noise) takes ~6 ms: bench/latex_generator.py compares it with
a training step of configs/latex-ocr-mt.json.

Minimum density: one active (channel, pixel) per motif, MEAN_MOTIFS_PER_IMAGE / (32 * 120
* 360) = 7.05e-6 (the paper evaluates at 0.5 * 0.75**38 = 8.94e-6, 1.27x that).
"""

from __future__ import annotations

import bisect
import contextlib
import math
import os
import threading
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from .base import Domain, Motif, Sample, register

__all__ = [
    "LatexOCR",
    "VOCABULARY",
    "SYMBOLS",
    "FRACTION_BAR",
    "sample_tokens",
    "latex",
    "mathtext_source",
    "render",
    "glyph_ink_height",
    "estimate_mean_motifs",
]

IMAGE_HEIGHT, IMAGE_WIDTH = 120, 360
MIN_TOKENS, MAX_TOKENS = 1, 30
FONT_SIZE, DPI = 10, 200
BORDER = round(3 / 72 * DPI)  # the reference's standalone border of 3 pt: 8 px
INK_THRESHOLD = 0.25  # darkness from which a rendered pixel is ink
NOISE = 0.25  # probability that a pixel is made ink
BOX_COVERAGE = 0.1  # a glyph's box: its pixels with coverage above this (reference: sat > .1)
MOTIF_CHANNELS = 32
BOX_PADDING = 2

# Seeds: disjoint ranges, all below 2**32.
SPLIT_SIZE = 1_000_000_000
SPLIT_STARTS = {"train": 0, "val": 1_000_000_000, "test": 2_000_000_000}

# -- tokens and symbols ---------------------------------------------------------------------
CHARACTERS = tuple("0123456789xyzabc")
PLUS = "+"
FRAC_OPEN, FRAC_MID, FRAC_CLOSE = "\\frac{", "}{", "}"
PAREN_OPEN, PAREN_CLOSE = "\\left(", "\\right)"
SUP_OPEN, SUP_CLOSE = "^{", "^}"
SUB_OPEN, SUB_CLOSE = "_{", "_}"
VOCABULARY = (*CHARACTERS, PLUS, FRAC_OPEN, FRAC_MID, FRAC_CLOSE, PAREN_OPEN, PAREN_CLOSE,
              SUP_OPEN, SUP_CLOSE, SUB_OPEN, SUB_CLOSE)
FRACTION_BAR = "frac-bar"
SYMBOLS = (*CHARACTERS, "+", "(", ")", FRACTION_BAR)
# the motif each token draws (FRAC_MID: the bar); the other tokens draw nothing
TOKEN_SYMBOL = {**{c: c for c in CHARACTERS}, PLUS: "+", PAREN_OPEN: "(", PAREN_CLOSE: ")",
                FRAC_MID: FRACTION_BAR}
_LATEX = {SUP_CLOSE: "}", SUB_CLOSE: "}"}  # everything else is its own LaTeX

# -- grammar -------------------------------------------------------------------------------
ATOM_PAREN_WEIGHT = 0.25  # relative to 1 for a (possibly scripted) symbol; see the docstring
GRAMMAR: dict[str, list[tuple[float, tuple[str, ...]]]] = {
    "start": [(1.0, ("expr",)),
              (0.25, (FRAC_OPEN, "start", FRAC_MID, "start", FRAC_CLOSE))],
    "expr": [(1.0, ("term",)), (0.25, ("term", PLUS, "expr"))],
    "term": [(1.0, ("atom",)), (0.25, ("atom", "term"))],
    "atom": [(1.0, ("script",)), (ATOM_PAREN_WEIGHT, (PAREN_OPEN, "expr", PAREN_CLOSE))],
    "script": [(1.0, ("sym",)), (1.0, ("sym", SUP_OPEN, "sym", SUP_CLOSE)),
               (1.0, ("sym", SUB_OPEN, "sym", SUB_CLOSE))],
    "sym": [(1.0, (c,)) for c in CHARACTERS],
}


def _compile(grammar):
    """nonterminal -> (cumulative probabilities, productions with elements reversed)."""
    rules = {}
    for name, productions in grammar.items():
        weights = np.array([w for w, _ in productions], dtype=float)
        cum = np.cumsum(weights / weights.sum())
        cum[-1] = 1.0
        rules[name] = (cum.tolist(), [tuple(reversed(p)) for _, p in productions])
    return rules


_RULES = _compile(GRAMMAR)


_BLOCK = 256  # uniforms drawn at a time


def sample_tokens(rng: np.random.Generator) -> list[str]:
    """A token length uniform in 1..30, then formulas from `start` until one has that
    length. Each draw expands leftmost first and is abandoned as soon as it cannot have
    that length (every pending element yields at least one token), which leaves the
    accepted distribution unchanged. Choices use uniforms drawn from `rng` in blocks."""
    length = int(rng.integers(MIN_TOKENS, MAX_TOKENS + 1))
    rules, uniforms, k = _RULES, [], 0
    while True:
        out: list[str] = []
        stack = ["start"]
        while stack:
            item = stack.pop()
            rule = rules.get(item)
            if rule is None:
                out.append(item)
                continue
            if k == len(uniforms):
                uniforms, k = rng.random(_BLOCK).tolist(), 0
            cum, productions = rule
            stack.extend(productions[bisect.bisect_right(cum, uniforms[k])])
            k += 1
            if len(out) + len(stack) > length:
                break
        else:
            if len(out) == length:
                return out


def latex(label: Sequence[str]) -> str:
    """The LaTeX source of a label, e.g. `x^{2}+\\frac{a}{b}`."""
    return "".join(_LATEX.get(t, t) for t in label)


def mathtext_source(label: Sequence[str]) -> str:
    """The mathtext string rendered for a label (fractions by depth, see the docstring)."""
    parts, depth = [], 0
    for t in label:
        if t == FRAC_OPEN:
            depth += 1
            parts.append("\\frac{" if depth in (2, 3) else "\\dfrac{")
        elif t == FRAC_CLOSE:
            depth -= 1
            parts.append("}")
        else:
            parts.append(_LATEX.get(t, t))
    return "$" + "".join(parts) + "$"


# -- rendering -----------------------------------------------------------------------------
_BIG = 1 << 14  # layout is shipped at +_BIG so that int() truncation is floor


def _place(size: int, target: int) -> int:
    """Where a canvas of `size` starts in `target` after the reference's centre crop / pad."""
    if size > target:
        return -((size - target) // 2)
    return (target - size) // 2


class _Renderer:
    """mathtext's parser and BaKoMa Computer Modern font set, built once per process.

    Uses matplotlib's internal layout (`_mathtext.Parser`, `ship`): the public
    `MathTextParser("path")` returns the same glyph list, but rasterising each glyph on its
    own is what gives exact per-symbol boxes. The fonts are private FT2Font objects, not
    matplotlib's shared ones: the glyphs cached here index into their font's glyph list,
    which a `clear()` from matplotlib's own text drawing would invalidate. matplotlib is
    pinned to 3.11 in pyproject; tests/test_latex_ocr.py compares the layout with stock
    mathtext's and the boxes with the ink."""

    def __init__(self):
        import matplotlib as mpl
        from matplotlib import _mathtext
        from matplotlib.font_manager import FontProperties
        from matplotlib.ft2font import FT2Font, LoadFlags

        class PrivateBakomaFonts(_mathtext.BakomaFonts):
            def _get_font(self, font):
                basename = self.fontmap.get(font, font)
                cached = self._fonts.get(basename)
                if cached is None and os.path.exists(basename):
                    cached = FT2Font(basename)
                    for key in (basename, cached.postscript_name,
                                cached.postscript_name.lower()):
                        self._fonts[key] = cached
                return cached

        self._mpl, self._mathtext = mpl, _mathtext
        # rcParams that the layout reads: fixed, whatever the user's matplotlibrc says
        self._rc = {"mathtext.default": "normal"}  # matplotlib's default: math italic
        self._prop = FontProperties(size=FONT_SIZE, math_fontfamily="cm")
        # glyphs are loaded (and cached) once per (symbol, size); LoadFlags.DEFAULT is
        # the Agg backend's default hinting
        self._flags = LoadFlags.DEFAULT
        with mpl.rc_context(self._rc):
            self._fonts = PrivateBakomaFonts(self._prop, self._flags)
        self._parser = _mathtext.Parser()
        self._lock = threading.Lock()  # the parser and the fonts' glyph cache are stateful

    def _fixed_rc(self):
        """rc_context(self._rc), skipped (it copies every rcParam) when they already hold."""
        rc = self._mpl.rcParams
        if all(rc[k] == v for k, v in self._rc.items()):
            return contextlib.nullcontext()
        return self._mpl.rc_context(self._rc)

    def layout(self, label: Sequence[str], via: str = "tree"):
        """The label's mathtext box. via "tree": built by calling the parser's own
        actions in the order its grammar would (no pyparsing; ~10x faster); "string":
        `Parser.parse(mathtext_source(label))` with these fonts; "stock": the same with a
        fresh parser and matplotlib's own BakomaFonts, as `MathTextParser("agg")` lays it
        out. All three give the same layout (tested)."""
        with self._lock, self._fixed_rc():
            if via == "stock":
                fonts = self._mathtext.BakomaFonts(self._prop, self._flags)
                return self._mathtext.Parser().parse(mathtext_source(label), fonts,
                                                     FONT_SIZE, DPI)
            if via == "string":
                return self._parser.parse(mathtext_source(label), self._fonts, FONT_SIZE, DPI)
            return self._build(label)

    def render(self, label: Sequence[str], via: str = "tree"
               ) -> tuple[np.ndarray, list[Motif]]:
        """(coverage (H, W) uint8 0..255, motifs) of a label, before binarisation."""
        box = self.layout(label, via)
        top = _place(math.ceil(box.height + box.depth) + 2 * BORDER, IMAGE_HEIGHT) + BORDER
        left = _place(math.ceil(box.width) + 2 * BORDER, IMAGE_WIDTH) + BORDER
        with self._lock:
            output = self._mathtext.ship(box, (_BIG + left, _BIG + top))
            return self._rasterise(label, output)

    def _build(self, label: Sequence[str]):
        """What `Parser.parse("$" + source + "$")` returns, without the pyparsing grammar:
        main -> [non_math "", math, non_math ""]; every token of `math` is what the
        grammar's `subsuper` gives (a symbol's Char, a spaced "+", a scripted symbol, a
        \\left( ... \\right) or a fraction)."""
        mt, parser = self._mathtext, self._parser
        parser._state_stack = [mt.ParserState(self._fonts, "default", "rm", FONT_SIZE, DPI)]
        parser._em_width_cache = {}
        parser._needs_space_after_subsuper = False
        try:
            parser.push_state()  # non_math: math starts in mathtext.default
            parser.get_state().font = self._rc["mathtext.default"]
            tokens, end = self._sequence(label, 0, 0)
            if end != len(label):
                raise ValueError(f"not a formula of the grammar: {latex(label)}")
            math_list = mt.Hlist(tokens)
            parser.pop_state()  # math
            return mt.Hlist([mt.Hlist([]), math_list, mt.Hlist([])])
        finally:
            parser._state_stack = []
            parser._em_width_cache = {}

    def _sequence(self, label: Sequence[str], i: int, depth: int) -> tuple[list, int]:
        """The mathtext tokens of label[i:] up to the next closing token (not consumed)."""
        mt, parser = self._mathtext, self._parser
        out = []
        while i < len(label):
            t = label[i]
            if t in CHARACTERS:
                [char] = parser.symbol(t, 0, {"sym": t})
                if i + 1 < len(label) and label[i + 1] in (SUP_OPEN, SUB_OPEN):
                    op = "^" if label[i + 1] == SUP_OPEN else "_"
                    if (i + 3 >= len(label) or label[i + 2] not in CHARACTERS
                            or label[i + 3] != (SUP_CLOSE if op == "^" else SUB_CLOSE)):
                        raise ValueError(f"not a formula of the grammar: {latex(label)}")
                    parser.push_state()  # a { } group
                    [script] = parser.symbol(label[i + 2], 0, {"sym": label[i + 2]})
                    [group] = parser.group({"group": [script]})
                    parser.pop_state()
                    [node] = parser.subsuper("", 0, {"nucleus": char, "subsuper": [op, group]})
                    out.append(node)
                    i += 4
                else:
                    out.append(char)
                    i += 1
            elif t == PLUS:
                [node] = parser.symbol("x+", 1, {"sym": "+"})  # a binary operator: spaced
                out.append(node)
                i += 1
            elif t == PAREN_OPEN:
                middle, i = self._sequence(label, i + 1, depth)
                if i >= len(label) or label[i] != PAREN_CLOSE:
                    raise ValueError(f"not a formula of the grammar: {latex(label)}")
                out.append(parser._auto_sized_delimiter("(", middle, ")"))
                i += 1
            elif t == FRAC_OPEN:
                num, i = self._sequence(label, i + 1, depth + 1)
                if i >= len(label) or label[i] != FRAC_MID:
                    raise ValueError(f"not a formula of the grammar: {latex(label)}")
                den, i = self._sequence(label, i + 1, depth + 1)
                if i >= len(label) or label[i] != FRAC_CLOSE:
                    raise ValueError(f"not a formula of the grammar: {latex(label)}")
                action = parser.frac if depth + 1 in (2, 3) else parser.dfrac
                [node] = action({"num": mt.Hlist(num), "den": mt.Hlist(den)})
                out.append(node)
                i += 1
            else:
                break  # a closing token: the caller's
        return out, i

    def _rasterise(self, label, output) -> tuple[np.ndarray, list[Motif]]:
        h, w = IMAGE_HEIGHT, IMAGE_WIDTH
        image = np.zeros((h, w), np.uint8)
        scratch = np.zeros((h, w), np.uint8)
        cut = int(BOX_COVERAGE * 255)
        glyphs, rects = iter(output.glyphs), iter(output.rects)
        motifs = []
        for token in label:
            symbol = TOKEN_SYMBOL.get(token)
            if symbol is None:
                continue
            if symbol == FRACTION_BAR:
                x, y, bw, bh = next(rects)
                # as matplotlib's Agg rasteriser draws a rule (Output.to_raster)
                height = max(int(bh) - 1, 0)
                row = int(y) - _BIG if height else int(y + bh / 2 - 0.5) - _BIG
                r0, r1 = max(row, 0), min(row + height + 1, h)
                c0, c1 = max(math.floor(x) - _BIG, 0), min(math.ceil(x + bw) + 1 - _BIG, w)
                if r0 < r1 and c0 < c1:
                    image[r0:r1, c0:c1] = 255
                    motifs.append(_motif(symbol, r0, c0, r1, c1))
                continue
            ox, oy, info = next(glyphs)
            _check_glyph(symbol, info)
            m = info.metrics
            x, y = int(ox) - _BIG, int(oy - m.iceberg) - _BIG
            # the bitmap's extent, with a margin: rows y .., columns x + floor(xmin) ..
            r0, r1 = max(y - 3, 0), min(y + math.ceil(m.ymax - m.ymin) + 4, h)
            c0 = max(x + math.floor(m.xmin) - 3, 0)
            c1 = min(x + math.ceil(m.xmax) + 4, w)
            if r0 >= r1 or c0 >= c1:
                continue  # cropped away
            info.font.draw_glyph_to_bitmap(scratch, x, y, info.glyph, antialiased=True)
            region = scratch[r0:r1, c0:c1]
            rows, cols = np.nonzero(region > cut)
            if len(rows):
                np.maximum(image[r0:r1, c0:c1], region, out=image[r0:r1, c0:c1])
                motifs.append(_motif(symbol, r0 + int(rows.min()), c0 + int(cols.min()),
                                     r0 + int(rows.max()) + 1, c0 + int(cols.max()) + 1))
            region[:] = 0
        if next(glyphs, None) is not None or next(rects, None) is not None:
            raise RuntimeError(f"mathtext drew more than the label's symbols: {latex(label)}")
        return image, motifs


def _motif(symbol: str, r0: int, c0: int, r1: int, c1: int) -> Motif:
    return Motif(symbol, ((r0 + r1) // 2, (c0 + c1) // 2), (r0, c0, r1, c1))


_GLYPH_FONTS = {**{c: ("Cmr10",) for c in "0123456789+"},
                **{c: ("Cmmi10",) for c in "xyzabc"},
                "(": ("Cmr10", "Cmex10"), ")": ("Cmr10", "Cmex10")}


def _check_glyph(symbol: str, info) -> None:
    """The layout's glyphs come in token order: a character must be that character, in
    Computer Modern roman (digits, +) or math italic (letters); a parenthesis may be a
    larger one from cmex10."""
    ok = info.postscript_name in _GLYPH_FONTS[symbol] and (
        symbol in "()" or chr(info.num) == symbol)
    if not ok:
        raise RuntimeError(f"mathtext glyph {info.postscript_name}:{info.num} where "
                           f"{symbol!r} was expected (a matplotlib layout change?)")


@lru_cache(maxsize=1)
def _renderer() -> _Renderer:
    return _Renderer()


if hasattr(os, "register_at_fork"):  # FT2Font objects must not cross a fork (matplotlib)
    os.register_at_fork(after_in_child=_renderer.cache_clear)


def render(label: Sequence[str], via: str = "tree") -> tuple[np.ndarray, list[Motif]]:
    """The noise-free rendering of a label: (coverage (120, 360) uint8 0..255, motifs).
    `via`: how the layout is built ("tree", "string" or "stock", `_Renderer.layout`)."""
    return _renderer().render(label, via)


def binarise(coverage: np.ndarray) -> np.ndarray:
    """Ink (1) where the darkness is >= INK_THRESHOLD."""
    return (coverage >= math.ceil(INK_THRESHOLD * 255)).astype(np.uint8)


def glyph_ink_height(symbol: str) -> int:
    """Rows of ink (darkness >= 0.25) of one symbol rendered alone at full size."""
    ink = binarise(render([symbol])[0])
    return int(ink.any(axis=1).sum())


def estimate_mean_motifs(n: int = 2000, first_seed: int = 0) -> float:
    """Mean number of motifs per image over training seeds first_seed .. + n - 1."""
    domain = LatexOCR()
    return float(np.mean([len(domain.sample(s).motifs)
                          for s in range(first_seed, first_seed + n)]))


# estimate_mean_motifs(2000): the mean over training seeds 0..1999 (deterministic; 9.7445
# symbols drawn per formula, 1 image of the 2000 cropped one away). Recompute it if the
# grammar or the rendering changes; tests/test_latex_ocr.py checks it on a smaller sample.
MEAN_MOTIFS_PER_IMAGE = 9.744


class LatexOCR(Domain):
    """LaTeX-OCR through the Domain interface (SPEC 6). See the module docstring."""

    name = "latex-ocr"
    description = ("a random formula (fractions, parentheses, scripts, +) rendered in "
                   "Computer Modern in a 120x360 image with 25% speckle noise (SPEC 6)")
    label_rule = ("the formula's LaTeX tokens in source order: a fraction is FRAC( numerator "
                  "FRACMID denominator FRAC), scripts follow their base (SUP( or SUB( ... "
                  "SUP)/SUB)), so the order is reading order except inside fractions")
    image_shape = (IMAGE_HEIGHT, IMAGE_WIDTH)
    vocabulary = VOCABULARY
    max_label_length = MAX_TOKENS
    min_label_length = MIN_TOKENS
    symbols = SYMBOLS
    assignment = "many-to-one"
    motif_channels = MOTIF_CHANNELS
    box_padding = BOX_PADDING

    def sample(self, seed: int, split: str = "train") -> Sample:
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        rng = np.random.default_rng(int(seed))
        label = sample_tokens(rng)
        coverage, motifs = render(label)
        image = binarise(coverage)
        image |= (rng.random(image.shape) < NOISE).astype(np.uint8)
        return Sample(int(seed), image, label, motifs)

    def split_range(self, split: str) -> range:
        self.check_split(split)
        start = SPLIT_STARTS[split]
        return range(start, start + SPLIT_SIZE)

    def theoretical_min_density(self, channels: int | None = None) -> float:
        """One active (channel, pixel) per motif: MEAN_MOTIFS_PER_IMAGE / (C * H * W)."""
        c = channels or self.motif_channels
        return MEAN_MOTIFS_PER_IMAGE / (c * IMAGE_HEIGHT * IMAGE_WIDTH)


LATEX_OCR = register(LatexOCR())
