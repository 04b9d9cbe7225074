"""Alignment: how well the channels match the digits, next to the paper's numbers."""

import plotly.graph_objects as go
import streamlit as st

from frontend import api_client as api
from frontend.app_pages import _common as ui

# SPEC 4: Sparling on DigitCircle, means over 9 seeds; errors in percent.
PAPER = {
    "Paper: Sparling MT": {"e2ee": 0.74, "fpe": 1.48, "fne": 0.42, "ce": 1.16,
                           "density": 5.02e-5, "density_ratio": 1.12},
    "Paper: ST ablation": {"e2ee": 2.11, "fpe": 0.0025, "fne": 0.98, "ce": 22.19,
                           "density": 5.02e-5, "density_ratio": 1.12},
}
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


def metrics_table(metrics: dict | None, name: str) -> list[dict]:
    """One row per metric: this checkpoint, then the paper's two DigitCircle results."""
    metrics = metrics or {}
    return [{"metric": label, name: _fmt(key, metrics.get(key)),
             **{paper: _fmt(key, values.get(key)) for paper, values in PAPER.items()}}
            for key, label in ROWS]


def confusion_figure(confusion: list[list[int]], mapping: dict[int, int]) -> go.Figure:
    """Rows: true digit; columns: channel. The assigned cells are outlined."""
    n_digits, n_channels = len(confusion), len(confusion[0]) if confusion else 0
    fig = go.Figure(go.Heatmap(
        z=confusion, x=[f"ch {c}" for c in range(n_channels)],
        y=[f"digit {d}" for d in range(n_digits)], colorscale="Blues",
        text=confusion, texttemplate="%{text}", colorbar={"title": {"text": "boxes"}},
        hovertemplate="%{y}, %{x}: %{z} boxes<extra></extra>"))
    for c, d in mapping.items():
        if d < n_digits and c < n_channels:
            fig.add_shape(type="rect", x0=c - 0.5, x1=c + 0.5, y0=d - 0.5, y1=d + 0.5,
                          line={"color": "#e66101", "width": 3})
    fig.update_yaxes(autorange="reversed", title_text="true digit")
    fig.update_xaxes(title_text="predicted channel (argmax in the digit's box)", side="top")
    fig.update_layout(height=520, margin={"l": 10, "r": 10, "t": 60, "b": 10})
    return fig


st.title("Alignment with the ground truth")
model_id = ui.current_model()
detail = ui.call(api.get_model, model_id, what=f"read checkpoint {model_id}")
metrics = detail.get("metrics")
mapping = {int(c): int(d) for c, d in (detail.get("channel_to_digit") or {}).items()}

if not metrics:
    st.warning("This checkpoint has not been evaluated yet, so there are no motif metrics. "
               "Run `sparling evaluate` on it and reload.")
else:
    n = metrics.get("n")
    st.caption((f"Evaluated on {n:,} test images. " if isinstance(n, int) else "")
               + "Each ground-truth digit box is hit (its strongest channel is the one "
               "assigned to that digit), confused (another channel) or missed (nothing fires "
               "in it); every active pixel outside all boxes is a false positive.")

st.subheader("Metrics vs the paper")
st.dataframe(metrics_table(metrics, f"This checkpoint ({model_id})"), hide_index=True,
             width="stretch")
st.caption("Paper: Gupta et al., Sparling, DigitCircle, means over 9 seeds. Lower is better "
           "for every error. The theoretical minimum density is one active value per digit: "
           "4.49e-5.")

left, right = st.columns([3, 1], gap="large")
with left:
    st.subheader("Confusion table")
    confusion = detail.get("confusion")
    if confusion:
        st.plotly_chart(confusion_figure(confusion, mapping), key="confusion")
        st.caption("Counts of ground-truth digit boxes (rows) by the channel that fired "
                   "strongest inside them (columns). Orange outlines: the one-to-one "
                   "channel-to-digit assignment; everything off it counts as confusion.")
    else:
        st.caption("No confusion table: the checkpoint has no evaluation.")
with right:
    if mapping:
        st.subheader("Channel → digit")
        st.dataframe([{"channel": c, "digit": d} for c, d in sorted(mapping.items())],
                     hide_index=True, width="stretch")
