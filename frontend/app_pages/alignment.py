"""Alignment: how well the channels match the ground-truth symbols, next to the paper's
numbers for the domain."""

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
ROWS = [("e2ee", "E2EE: end-to-end error (%)"), ("fpe", "FPE: false-positive error (%)"),
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


def confusion_figure(confusion: list[list[int]], mapping: dict[int, int],
                     symbols: list[str] | None = None) -> go.Figure:
    """Rows: true symbol; columns: channel. The assigned cells are outlined (several per
    row when the assignment is many-to-one). `mapping`: channel -> symbol row index."""
    n_digits, n_channels = len(confusion), len(confusion[0]) if confusion else 0
    symbols = symbols or [str(d) for d in range(n_digits)]
    fig = go.Figure(go.Heatmap(
        z=confusion, x=[f"ch {c}" for c in range(n_channels)],
        y=[f"{symbols[d]} " for d in range(n_digits)], colorscale="Blues",
        text=confusion, texttemplate="%{text}", colorbar={"title": {"text": "boxes"}},
        hovertemplate="%{y}, %{x}: %{z} boxes<extra></extra>"))
    for c, d in mapping.items():
        if d < n_digits and c < n_channels:
            fig.add_shape(type="rect", x0=c - 0.5, x1=c + 0.5, y0=d - 0.5, y1=d + 0.5,
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
        st.plotly_chart(confusion_figure(confusion, mapping, symbols), key="confusion")
        rule = ("each channel's majority symbol (many-to-one)" if many
                else "the one-to-one channel-to-symbol assignment")
        st.caption("Counts of ground-truth motif boxes (rows) by the channel that fired "
                   f"strongest inside them (columns). Orange outlines: {rule}; everything "
                   "off it counts as confusion.")
    else:
        st.caption("No confusion table: the checkpoint has no evaluation.")
with right:
    if named:
        st.subheader("Channel → symbol")
        st.dataframe([{"channel": c, "symbol": d} for c, d in sorted(named.items())],
                     hide_index=True, width="stretch")
