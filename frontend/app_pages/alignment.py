"""Alignment: how well the channels match the ground-truth symbols, next to the paper's
numbers for the domain."""

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from frontend import api_client as api
from frontend.app_pages import _common as ui

# SPEC 4: Sparling's published results, means over 9 seeds; errors in percent.
PAPER_BY_DOMAIN = {
    "digit-circle": {
        "Paper: Sparling MT": {"e2ee": 0.74, "fpe": 1.48, "fne": 0.42, "ce": 1.16,
                               "density": 5.02e-5, "density_ratio": 1.12},
        "Paper: ST ablation": {"e2ee": 2.11, "fpe": 0.0025, "fne": 0.98, "ce": 22.19,
                               "density": 5.02e-5, "density_ratio": 1.12},
    },
    "latex-ocr": {
        "Paper: Sparling MT": {"e2ee": 0.98, "fpe": 0.53, "fne": 14.20, "ce": 2.50,
                               "density": 8.94e-6},
    },
}
PAPER = PAPER_BY_DOMAIN["digit-circle"]
ROWS = [("e2ee", "E2EE: end-to-end error (%)"),
        ("exact_match_accuracy", "Exact-match accuracy (%)"),
        ("fpe", "FPE: false-positive error (%)"),
        ("fne", "FNE: false-negative error (%)"), ("ce", "CE: confusion error (%)"),
        ("density", "Density (eval mode)"), ("density_ratio", "Density / theoretical minimum")]


def _fmt(key: str, value) -> str:
    if value is None:
        return "—"
    if key == "density":
        return f"{value:.2e}"
    if key == "density_ratio":
        return f"{value:.2f}x"
    return f"{value:.2g}" if 0 < abs(value) < 0.01 else f"{value:.2f}"


def metrics_table(metrics: dict | None, name: str, domain: str = "digit-circle") -> list[dict]:
    """One row per metric: this checkpoint, then the paper's results for its domain."""
    metrics = metrics or {}
    paper = PAPER_BY_DOMAIN.get(domain, {})
    return [{"metric": label, name: _fmt(key, metrics.get(key)),
             **{p: _fmt(key, values.get(key)) for p, values in paper.items()}}
            for key, label in ROWS]


def channel_order(n_channels: int, mapping: dict[int, int]) -> list[int]:
    """Channels by their assigned symbol (so the assignment runs down the diagonal), then
    the unassigned ones."""
    return sorted(range(n_channels), key=lambda c: (c not in mapping, mapping.get(c, 0), c))


def channel_health(confusion: list[list[int]]) -> dict[int, str]:
    """Channels that land in no box ("dead") or in under 1% of the boxes an average channel
    lands in ("weak")."""
    totals = np.asarray(confusion).sum(axis=0) if confusion else np.zeros(0)
    mean = totals.mean() if totals.size else 0
    return {int(c): ("dead" if t == 0 else "weak") for c, t in enumerate(totals)
            if t == 0 or t < 0.01 * mean}


def confusion_figure(confusion: list[list[int]], mapping: dict[int, int],
                     symbols: list[str] | None = None, missed: list[int] | None = None,
                     scale: str = "counts") -> go.Figure:
    """Rows: true symbol; columns: channels ordered so the assignment is the diagonal, then
    a "missed" column when known. Assigned cells are outlined (several per row when the
    assignment is many-to-one). `mapping`: channel -> symbol row index. `scale`: counts,
    log (log10(1 + count)) or row (each row as percent of its symbol's boxes)."""
    table = np.asarray(confusion, dtype=float)
    n_digits, n_channels = table.shape if table.size else (0, 0)
    symbols = symbols or [str(d) for d in range(n_digits)]
    order = channel_order(n_channels, mapping)
    health = channel_health(confusion)
    columns = [table[:, c] for c in order]
    names = [f"ch {c}" + (f" ({health[c]})" if c in health else "") for c in order]
    if missed is not None and len(missed) == n_digits:
        columns.append(np.asarray(missed, dtype=float))
        names.append("missed")
    counts = np.stack(columns, axis=1) if columns else table
    if scale == "row":
        z = 100 * counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        bar = "% of the row"
    elif scale == "log":
        z, bar = np.log10(1 + counts), "log10(1 + boxes)"
    else:
        z, bar = counts, "boxes"
    fig = go.Figure(go.Heatmap(  # plain lists: readable in the figure's JSON
        z=np.asarray(z).tolist(), x=names, y=[f"{symbols[d]} " for d in range(n_digits)],
        colorscale="Blues", customdata=counts.astype(int).tolist(),
        text=counts.astype(int).tolist(), texttemplate="%{text}",
        colorbar={"title": {"text": bar}},
        hovertemplate="%{y}, %{x}: %{customdata} boxes<extra></extra>"))
    for x, c in enumerate(order):
        d = mapping.get(c)
        if d is not None and d < n_digits:
            fig.add_shape(type="rect", x0=x - 0.5, x1=x + 0.5, y0=d - 0.5, y1=d + 0.5,
                          line={"color": "#e66101", "width": 3})
    fig.update_yaxes(autorange="reversed", title_text="true symbol", type="category")
    fig.update_xaxes(title_text="predicted channel (argmax in the motif's box)", side="top")
    fig.update_layout(height=max(520, 26 * n_digits),
                      margin={"l": 10, "r": 10, "t": 60, "b": 10})
    return fig


st.title("Alignment with the ground truth")
model_id = ui.current_model()
detail = ui.call(api.get_model, model_id, what=f"read checkpoint {model_id}")
metrics = detail.get("metrics")
domain = detail.get("domain") or "digit-circle"
symbols = detail.get("symbols") or [str(d) for d in range(10)]
row_of = {s: i for i, s in enumerate(symbols)}
named = {int(c): str(d) for c, d in (detail.get("assignment") or {}).items()}
mapping = {c: row_of[d] for c, d in named.items() if d in row_of}
many = detail.get("assignment_kind") == "many-to-one"

if not metrics:
    st.warning("This checkpoint has not been evaluated yet, so there are no motif metrics. "
               "Run `sparling evaluate` on it and reload.")
else:
    n = metrics.get("n")
    st.caption((f"Evaluated on {n:,} test images. " if isinstance(n, int) else "")
               + "Each ground-truth motif box is hit (its strongest channel is assigned to "
               "that symbol), confused (another symbol's channel) or missed (nothing fires "
               "in it); every active pixel outside all boxes is a false positive.")

st.subheader("Metrics vs the paper")
st.dataframe(metrics_table(metrics, f"This checkpoint ({model_id})", domain), hide_index=True,
             width="stretch")
if domain in PAPER_BY_DOMAIN:
    st.caption(f"Paper: Gupta et al., Sparling, {domain}, means over 9 seeds. Lower is better "
               "for every error. The theoretical minimum density is one active value per "
               "ground-truth motif.")
else:
    st.caption("The paper has no numbers for this domain.")

left, right = st.columns([3, 1], gap="large")
with left:
    st.subheader("Confusion table")
    confusion = detail.get("confusion")
    if confusion:
        scale = st.radio("Scale", ["counts", "log", "row"], horizontal=True,
                         key="alignment_scale", format_func={
                             "counts": "Counts", "log": "Log", "row": "% of each row"}.get,
                         help="Log and row-normalised scales show the small off-diagonal "
                              "counts that a count scale hides")
        missed = (metrics or {}).get("missed_by_symbol")
        st.plotly_chart(confusion_figure(confusion, mapping, symbols, missed, scale),
                        key="confusion")
        rule = ("each channel's majority symbol (many-to-one)" if many
                else "the one-to-one channel-to-symbol assignment")
        st.caption("Ground-truth motif boxes (rows) by the channel that fired strongest "
                   "inside them (columns, ordered so the assignment runs down the "
                   f"diagonal). Orange outlines: {rule}; everything off it counts as "
                   "confusion. " + ("The last column counts the boxes nothing fired in."
                                    if missed else "This evaluation predates per-symbol "
                                    "miss counts: re-run `sparling evaluate` for the "
                                    "missed column."))
    else:
        st.caption("No confusion table: the checkpoint has no evaluation.")
with right:
    if named or confusion:
        st.subheader("Channel → symbol")
        health = channel_health(confusion) if confusion else {}
        n_channels = len(confusion[0]) if confusion else 0
        rows = sorted(set(named) | set(range(n_channels)))
        st.dataframe([{"channel": c, "symbol": named.get(c, "—"),
                       "flag": health.get(c, "")} for c in rows],
                     hide_index=True, width="stretch")
        if health:
            st.caption("dead: never the strongest channel in a box; weak: in under 1% of "
                       "the boxes an average channel takes.")
