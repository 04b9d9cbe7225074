"""Training: density, accuracy and loss against samples seen, from the checkpoint history."""

import math

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from frontend import api_client as api
from frontend.app_pages import _common as ui

MIN_DENSITY = 4.492e-5  # SPEC 2: one active value per digit, 10 x 100 x 100 map
PAPER_DENSITY = 5.0226e-5  # SPEC 2: 0.5 * 0.75**32, where the paper evaluates

SERIES = [  # (row, history field, legend name, colour)
    (1, "density", "target density", "#1f77b4"),
    (1, "realised_density", "realised density", "#ff7f0e"),
    (2, "accuracy", "validation accuracy", "#2ca02c"),
    (3, "loss", "training loss", "#d62728"),
]


def series(history: list[dict], field: str) -> tuple[list, list]:
    """(samples, values) for the rows that have a number in `field` (and positive values on
    the log-scale density axis)."""
    xs, ys = [], []
    for row in history:
        value = row.get(field)
        if row.get("samples") is None or not isinstance(value, int | float):
            continue
        if "density" in field and value <= 0:
            continue
        xs.append(row["samples"])
        ys.append(value)
    return xs, ys


def resample_events(history: list[dict]) -> list[tuple[int, float | None, str]]:
    """(samples, accuracy, description) for each validation where channels were resampled:
    the trainer's `resampled` rows are [channel, the channel it duplicated or -1, digit]."""
    events = []
    for row in history:
        rows = row.get("resampled")
        if row.get("samples") is None or not isinstance(rows, list):
            continue
        parts = []
        for r in rows:
            if not (isinstance(r, list) and len(r) == 3 and all(isinstance(x, int) for x in r)):
                continue
            channel, keep, digit = r
            why = f"a copy of channel {keep}" if keep >= 0 else "had not learned it"
            parts.append(f"channel {channel} ({why}) re-initialised for token {digit}")
        if parts:
            accuracy = row.get("accuracy")
            events.append((row["samples"], accuracy if isinstance(accuracy, int | float)
                           else None, "; ".join(parts)))
    return events


def training_figure(history: list[dict]) -> go.Figure:
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.07,
                        subplot_titles=("Density (log scale)", "Accuracy", "Loss"))
    for row, field, name, colour in SERIES:
        xs, ys = series(history, field)
        if xs:
            fig.add_trace(go.Scatter(x=xs, y=ys, name=name, mode="lines+markers",
                                     marker={"size": 4}, line={"color": colour}),
                          row=row, col=1)
    events = resample_events(history)
    if events:
        fig.add_trace(go.Scatter(
            x=[e[0] for e in events], y=[e[1] for e in events], name="channel resampled",
            mode="markers", marker={"size": 11, "symbol": "x", "color": "#9467bd"},
            hovertext=[e[2] for e in events], hoverinfo="text+x"), row=2, col=1)
    for y, dash in ((MIN_DENSITY, "dot"), (PAPER_DENSITY, "dash")):
        fig.add_hline(y=y, line={"color": "#555555", "dash": dash, "width": 1}, row=1, col=1)
    # annotations on a log axis take log10(y); one label for the two nearby lines
    fig.add_annotation(x=1, xref="x domain", y=math.log10(PAPER_DENSITY), yref="y",
                       yanchor="bottom", xanchor="right", showarrow=False,
                       text="paper 5.02e-5 (dashed) · theoretical minimum 4.49e-5 (dotted)",
                       font={"size": 11, "color": "#555555"})
    fig.update_yaxes(type="log", exponentformat="e", row=1, col=1)
    _, accuracy = series(history, "accuracy")
    if accuracy and max(accuracy) <= 1:  # a fraction: show the whole 0..1 range
        fig.update_yaxes(range=[-0.02, 1.02], row=2, col=1)
    fig.update_xaxes(title_text="training samples seen", row=3, col=1)
    fig.update_layout(height=780, margin={"l": 10, "r": 10, "t": 70, "b": 10},
                      legend={"orientation": "h", "yref": "container", "y": 1,
                              "yanchor": "top", "x": 0}, hovermode="x unified")
    return fig


st.title("Training curves")
model_id = ui.current_model()
history = ui.call(api.get_history, model_id, what=f"read the history of {model_id}")["history"]

if not history:
    st.info("This checkpoint has no training history.")
    st.stop()

last = history[-1]
c1, c2, c3, c4 = st.columns(4)
c1.metric("Samples seen", f"{last.get('samples', 0):,}")
if isinstance(last.get("density"), int | float):
    c2.metric("Target density", f"{last['density']:.2e}",
              help="Annealed by the adaptive schedule: x0.75 whenever accuracy beats "
                   "the decaying threshold")
if isinstance(last.get("accuracy"), int | float):
    c3.metric("Accuracy", f"{last['accuracy']:.3f}")
if isinstance(last.get("loss"), int | float):
    c4.metric("Loss", f"{last['loss']:.4f}")

if isinstance(last.get("wall_s"), int | float):
    where = (f" on {last['device']}, {last.get('threads', '?')} threads, "
             f"{last.get('world_size', 1)} process(es)" if last.get("device") else "")
    st.caption(f"Wall time of the last segment: {last['wall_s'] / 60:.1f} min{where} "
               "(each resume restarts the clock).")

st.plotly_chart(training_figure(history), key="training_curves")
st.caption("Density is the fraction of the motif map left nonzero. Target: what the sparsity "
           "layer aims for; realised: what the model produced in eval mode. Crosses mark "
           "validations where duplicate channels were re-initialised (hover for which).")
for samples, _, text in resample_events(history):
    st.caption(f"{samples:,} samples: {text}")
with st.expander("History rows"):
    # nested lists (the `resampled` column) as text: one type per column for the table
    st.dataframe([{k: (str(v) if isinstance(v, list) else v) for k, v in row.items()}
                  for row in history], width="stretch")
