"""The LaTeX-OCR domain (SPEC 6): grammar, determinism, images, motif boxes, metrics."""

import json
from collections import Counter

import numpy as np
import pytest
from scipy.stats import chisquare

from sparling_core.analysis.evaluate import motif_boxes
from sparling_core.analysis.metrics import MotifStats, align_image, channel_assignment
from sparling_core.domains import get_domain
from sparling_core.domains import latex_ocr as lo

DOMAIN = get_domain("latex-ocr")


# -- an independent recogniser of the grammar (recursive descent over the tokens) ------------
class _Parser:
    def __init__(self, tokens):
        self.t, self.i = list(tokens), 0

    def peek(self):
        return self.t[self.i] if self.i < len(self.t) else None

    def eat(self, token):
        assert self.peek() == token, (self.i, token, self.t)
        self.i += 1

    def start(self):  # start -> expr | \frac{ start }{ start }
        if self.peek() == lo.FRAC_OPEN:
            self.eat(lo.FRAC_OPEN)
            self.start()
            self.eat(lo.FRAC_MID)
            self.start()
            self.eat(lo.FRAC_CLOSE)
        else:
            self.expr()

    def expr(self):  # expr -> term | term + expr
        self.term()
        if self.peek() == lo.PLUS:
            self.eat(lo.PLUS)
            self.expr()

    def term(self):  # term -> atom | atom term
        self.atom()
        if self.peek() in (*lo.CHARACTERS, lo.PAREN_OPEN):
            self.term()

    def atom(self):  # atom -> sym | sym ^{ sym } | sym _{ sym } | \left( expr \right)
        if self.peek() == lo.PAREN_OPEN:
            self.eat(lo.PAREN_OPEN)
            self.expr()
            self.eat(lo.PAREN_CLOSE)
            return
        self.sym()
        for opener, closer in ((lo.SUP_OPEN, lo.SUP_CLOSE), (lo.SUB_OPEN, lo.SUB_CLOSE)):
            if self.peek() == opener:
                self.eat(opener)
                self.sym()
                self.eat(closer)
                return

    def sym(self):
        assert self.peek() in lo.CHARACTERS, (self.i, self.t)
        self.i += 1


def parses(tokens) -> bool:
    p = _Parser(tokens)
    p.start()
    return p.i == len(tokens)


def test_every_sample_parses_and_lengths_are_uniform():
    lengths = []
    for seed in range(400):
        tokens = lo.sample_tokens(np.random.default_rng(seed))
        assert parses(tokens), tokens
        assert set(tokens) <= set(lo.VOCABULARY)
        lengths.append(len(tokens))
    assert min(lengths) >= 1 and max(lengths) <= 30
    counts = np.bincount(lengths, minlength=31)[1:]
    assert (counts > 0).all()  # every length 1..30 occurs
    assert chisquare(counts).pvalue > 1e-3  # uniform (400 draws, 13 expected per length)


def test_grammar_weights_follow_the_reference():
    # a parenthesis is 0.25 / 1.25 of the atoms; a scripted symbol 2/3 of the others
    atoms = Counter()
    for seed in range(300):
        tokens = lo.sample_tokens(np.random.default_rng(seed))
        atoms["paren"] += tokens.count(lo.PAREN_OPEN)
        scripts = tokens.count(lo.SUP_OPEN) + tokens.count(lo.SUB_OPEN)
        atoms["script"] += sum(t in lo.CHARACTERS for t in tokens) - scripts
    share = atoms["paren"] / (atoms["paren"] + atoms["script"])
    assert 0.14 < share < 0.26, share  # the SPEC's flattened rule would give ~0.08


def test_latex_and_mathtext_source():
    label = [lo.FRAC_OPEN, "x", lo.SUP_OPEN, "2", lo.SUP_CLOSE, lo.FRAC_MID, lo.FRAC_OPEN,
             "1", lo.FRAC_MID, lo.PAREN_OPEN, "y", lo.PLUS, "a", lo.SUB_OPEN, "b",
             lo.SUB_CLOSE, lo.PAREN_CLOSE, lo.FRAC_CLOSE, lo.FRAC_CLOSE]
    assert parses(label)
    assert lo.latex(label) == r"\frac{x^{2}}{\frac{1}{\left(y+a_{b}\right)}}"
    # depth 1 displays at full size (\dfrac), depth 2 shrinks (\frac)
    assert lo.mathtext_source(label) == r"$\dfrac{x^{2}}{\frac{1}{\left(y+a_{b}\right)}}$"
    _, motifs = lo.render(label)
    assert [m.symbol for m in motifs] == ["x", "2", lo.FRACTION_BAR, "1", lo.FRACTION_BAR,
                                          "(", "y", "+", "a", "b", ")"]


def test_samples_are_deterministic_binary_and_the_right_shape():
    a, b, c = DOMAIN.sample(11), DOMAIN.sample(11), DOMAIN.sample(12)
    assert np.array_equal(a.image, b.image) and a.label == b.label and a.motifs == b.motifs
    assert not np.array_equal(a.image, c.image)
    assert a.image.shape == (120, 360) and a.image.dtype == np.uint8
    assert set(np.unique(a.image)) <= {0, 1}
    assert 0.25 < a.image.mean() < 0.35  # 25% speckle plus the formula's ink
    images, labels = DOMAIN.batch([a, c])
    assert tuple(images.shape) == (2, 1, 120, 360)
    assert labels[0] == DOMAIN.token_ids(a.label)


@pytest.mark.parametrize("seed", [-1, 1.5, "3", True])
def test_bad_seed_is_rejected(seed):
    with pytest.raises(ValueError):
        DOMAIN.sample(seed)


def test_full_size_seven_is_19_px_tall():
    # SPEC 6: pdflatex's 10 pt Computer Modern at 200 dpi has a "7" about 19 px tall
    assert lo.glyph_ink_height("7") == 19


def test_boxes_hold_their_glyphs_ink():
    """Without noise: every box holds ink and is tight to it (within 1 px on each side),
    and every ink pixel of the image lies in some box (within 1 px)."""
    for seed in range(30):
        label = lo.sample_tokens(np.random.default_rng(seed))
        coverage, motifs = lo.render(label)
        ink = lo.binarise(coverage).astype(bool)
        covered = np.zeros_like(ink)
        drawn = [lo.TOKEN_SYMBOL[t] for t in label if t in lo.TOKEN_SYMBOL]
        assert [m.symbol for m in motifs] == drawn  # nothing cropped in these seeds
        for m in motifs:
            r0, c0, r1, c1 = m.box
            assert 0 <= r0 < r1 <= 120 and 0 <= c0 < c1 <= 360
            assert r0 <= m.center[0] < r1 and c0 <= m.center[1] < c1
            rows, cols = np.nonzero(ink[r0:r1, c0:c1])
            assert len(rows), (seed, m)
            assert rows.min() <= 1 and rows.max() >= r1 - r0 - 2, (seed, m)
            assert cols.min() <= 1 and cols.max() >= c1 - c0 - 2, (seed, m)
            covered[max(r0 - 1, 0):r1 + 1, max(c0 - 1, 0):c1 + 1] = True
        assert not (ink & ~covered).any(), seed


def test_cropped_symbols_are_clipped_or_dropped():
    wide = [c for c in "1234567890" for _ in range(3)]  # 30 symbols: wider than 360 px
    coverage, motifs = lo.render(wide)
    assert 0 < len(motifs) < 30
    for m in motifs:
        r0, c0, r1, c1 = m.box
        assert 0 <= c0 < c1 <= 360 and coverage[r0:r1, c0:c1].any()
    assert coverage[:, :3].any() and coverage[:, -3:].any()  # ink runs off both sides
    # the centre crop keeps a contiguous middle run of the symbols
    kept = [m.symbol for m in motifs]
    k = (30 - len(kept)) // 2
    assert kept in (wide[k:k + len(kept)], wide[k + 1:k + 1 + len(kept)])


def test_tree_layout_equals_stock_mathtext():
    """The layout built without pyparsing, on private fonts, is stock mathtext's."""
    renderer = lo._renderer()

    def glyphs(box):
        out = renderer._mathtext.ship(box)
        return ([(round(x, 6), round(y, 6), i.postscript_name, i.num, round(i.fontsize, 6))
                 for x, y, i in out.glyphs],
                [tuple(round(v, 6) for v in r) for r in out.rects],
                round(box.width, 6), round(box.height, 6), round(box.depth, 6))

    for seed in range(12):
        label = lo.sample_tokens(np.random.default_rng(seed))
        tree = glyphs(renderer.layout(label, "tree"))
        assert tree == glyphs(renderer.layout(label, "stock"))
        if seed < 3:
            assert tree == glyphs(renderer.layout(label, "string"))


def test_many_to_one_confusion_error():
    # rows: 3 symbols, columns: 5 channels; channel 4 never lands in a box
    confusion = np.array([[5, 0, 3, 0, 0],
                          [0, 4, 1, 0, 0],
                          [1, 0, 0, 2, 0]])
    assert channel_assignment(confusion, "many-to-one") == {0: 0, 1: 1, 2: 0, 3: 2}
    many = MotifStats(digits=3, channels=5, assignment="many-to-one", confusion=confusion)
    one = MotifStats(digits=3, channels=5, assignment="one-to-one", confusion=confusion.copy())
    assert many.report()["ce"] == pytest.approx(100 * 2 / 16)  # 1 + 1 off the majority
    assert one.report()["ce"] == pytest.approx(100 * 5 / 16)  # channel 2 must go unused


def test_one_point_per_motif_through_the_domains_boxes():
    """A map with one activation per motif at its centre, two channels per symbol (as
    many-to-one allows), aligned with the domain's padded boxes: no false positive and no
    confusion. Misses are only motifs whose centre lies in an earlier motif's padded box
    (a script next to its symbol): the earlier box takes that activation (SPEC 3)."""
    stats = MotifStats(digits=len(DOMAIN.symbols), channels=DOMAIN.motif_channels,
                       assignment=DOMAIN.assignment)
    expected_missed = 0
    for seed in range(5):
        s = DOMAIN.sample(seed)
        boxes = motif_boxes(DOMAIN, s)
        motif_map = np.zeros((DOMAIN.motif_channels, 120, 360), np.float32)
        for k, m in enumerate(s.motifs):
            symbol = DOMAIN.symbol_index(m.symbol)
            channel = symbol + 20 if k % 2 and symbol + 20 < DOMAIN.motif_channels else symbol
            # earlier motifs win ties: their own activation is their box's maximum
            motif_map[channel, m.center[0], m.center[1]] = 1.0 - 0.001 * k
            r, c = m.center
            expected_missed += any(b[0] <= r < b[2] and b[1] <= c < b[3] for _, b in boxes[:k])
        stats.add_alignment(align_image(motif_map, boxes), motif_map.size)
    report = stats.report()
    assert report["fpe"] == 0 and report["ce"] == 0
    assert report["missed"] == expected_missed and report["fne"] < 10
    assert report["assignment_kind"] == "many-to-one"


def test_registration_and_description():
    assert isinstance(DOMAIN, lo.LatexOCR) and DOMAIN.name == "latex-ocr"
    assert DOMAIN.image_shape == (120, 360) and DOMAIN.max_label_length == 30
    assert len(DOMAIN.vocabulary) == len(set(DOMAIN.vocabulary)) == 26
    assert len(DOMAIN.symbols) == len(set(DOMAIN.symbols)) == 20
    assert set("0123456789xyzabc+()") <= set(DOMAIN.symbols)
    assert DOMAIN.assignment == "many-to-one" and DOMAIN.motif_channels == 32
    assert DOMAIN.box_padding == 2
    ranges = [DOMAIN.split_range(s) for s in ("train", "val", "test")]
    assert all(a.stop <= b.start for a, b in zip(ranges, ranges[1:], strict=False))
    assert ranges[-1].stop <= 2**32
    assert DOMAIN.model_config_overrides()["image_size"] == [120, 360]
    assert DOMAIN.describe()["assignment"] == "many-to-one"


def test_min_density_constant():
    expected = lo.MEAN_MOTIFS_PER_IMAGE / (32 * 120 * 360)
    assert DOMAIN.theoretical_min_density() == pytest.approx(expected)
    assert DOMAIN.theoretical_min_density(64) == pytest.approx(expected / 2)
    # the constant is the mean over 2,000 training seeds; the first 100 agree within 10%
    assert lo.estimate_mean_motifs(100) == pytest.approx(lo.MEAN_MOTIFS_PER_IMAGE, rel=0.1)


@pytest.mark.slow
def test_min_density_constant_exactly():
    assert lo.estimate_mean_motifs(2000) == pytest.approx(lo.MEAN_MOTIFS_PER_IMAGE, abs=1e-9)


# -- the README picture with a trained model's activations (scripts/latex_figure.py) ---------
def test_activation_figure_marks_each_activation_in_its_symbols_colour():
    import importlib.util
    from pathlib import Path

    from sparling_core import api
    from sparling_core.checkpoint import load_checkpoint

    repo = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("latex_figure",
                                                  repo / "scripts" / "latex_figure.py")
    fig = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fig)
    ckpt = repo / "experiments" / "gpu-fast" / "round1" / "latex"  # the GPU preview run
    evaluation = ckpt / "eval.json"
    plain = fig.figure(0, 2, "test")
    full = np.asarray(fig.figure(0, 2, "test", ckpt, evaluation))
    h, w = DOMAIN.image_shape
    assert np.asarray(plain).shape == (2 * h * 2 + 12 + 14, w * 2, 3)
    assert full.shape[0] == plain.size[1] + h * 2 + 14 + 2
    # every activation's square is filled with its assigned symbol's colour at its site
    sample = DOMAIN.sample(DOMAIN.first_seed("test"), "test")
    acts = api.run(load_checkpoint(ckpt).model, sample).activations
    assignment = {int(c): int(s) for c, s in
                  json.loads(evaluation.read_text())["assignment"].items()}
    top = plain.size[1]
    assert len(acts) > 0
    for c, r, col in zip(acts.channel, acts.row, acts.col, strict=True):
        colour = fig._colour(assignment[int(c)], len(DOMAIN.symbols)) \
            if int(c) in assignment else (0, 0, 0)  # black: a channel assigned to no symbol
        # the square's centre pixel, unless a later square covers it
        covered = [(r2, k2) for r2, k2 in zip(acts.row, acts.col, strict=True)
                   if abs(int(r2) - int(r)) <= 2 and abs(int(k2) - int(col)) <= 2]
        if len(covered) == 1:
            assert tuple(full[top + int(r) * 2, int(col) * 2]) == colour
