"""Channels: one motif channel at a time: the symbol it aligns with, how often it fires,
the distribution of its values and the image patches where it fires hardest."""

import io
import zipfile

import plotly.graph_objects as go
import streamlit as st
from PIL import Image

from frontend import api_client as api
from frontend.app_pages import _common as ui

st.title("Channels")
model_id = ui.current_model()
overview = ui.call(api.get_channels, model_id, what="read the channel statistics")["channels"]
if not overview:
    st.info("This checkpoint reports no channels.")
    st.stop()
by_channel = {int(c["channel"]): c for c in overview}


def _describe(c: int) -> str:
    symbol = by_channel[c].get("symbol")
    return f"Channel {c}" + (f" → {symbol}" if symbol is not None else " (unassigned)")


pick_key = f"channel_pick_{model_id}"
if not st.session_state.get(f"_url_read_{pick_key}"):  # a shared link names the channel
    st.session_state[f"_url_read_{pick_key}"] = True
    if ui.url_int("channel") in by_channel:
        st.session_state[pick_key] = ui.url_int("channel")
channel = st.selectbox("Channel", list(by_channel), key=pick_key, format_func=_describe)
ui.set_url(channel=channel)
info = ui.call(api.get_channel, model_id, channel, what=f"read channel {channel}")

c1, c2, c3 = st.columns(3)
c1.metric("Aligned symbol", "—" if info.get("symbol") is None else info["symbol"])
c2.metric("Realised density", f"{info['density']:.2e}")
c3.metric("Top crops", len(info.get("top_crops") or []))

left, right = st.columns([2, 3], gap="large")
with left:
    st.subheader("Activation values")
    hist = info.get("histogram") or {}
    edges, counts = hist.get("edges") or [], hist.get("counts") or []
    if counts and len(edges) == len(counts) + 1:
        centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=True)]
        widths = [b - a for a, b in zip(edges[:-1], edges[1:], strict=True)]
        fig = go.Figure(go.Bar(x=centres, y=counts, width=widths,
                               marker_color=ui.channel_colour(channel),
                               hovertemplate="value %{x:.3f}<br>count %{y}<extra></extra>"))
        fig.update_layout(height=320, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                          xaxis_title="value of an active motif", yaxis_title="count",
                          bargap=0.05)
        st.plotly_chart(fig, key="channel_histogram")
        st.caption("Only nonzero values: the sparsity layer zeroes everything else.")
    else:
        st.caption("No activations recorded for this channel.")

    st.subheader("All channels")
    st.dataframe([{"channel": c["channel"], "symbol": c.get("symbol"),
                   "density": f"{c['density']:.2e}"} for c in overview],
                 hide_index=True, width="stretch")

with right:
    st.subheader("Top-activating crops")
    crops = info.get("top_crops") or []
    if not crops:
        st.caption("This channel never fired on the images the backend looked at.")
    per_row = 4
    for start in range(0, len(crops), per_row):
        cols = st.columns(per_row)
        for col, crop in zip(cols, crops[start:start + per_row], strict=False):
            origin = crop.get("crop_origin")
            mark = ((crop["row"] - origin[0], crop["col"] - origin[1]) if origin else None)
            col.image(ui.crop_image(crop["crop"], mark),
                      caption=f"seed {crop['seed']} · ({crop['row']}, {crop['col']}) · "
                              f"{crop['value']:.2f}")
    if crops:
        st.caption("Patches of validation images around where this channel fired hardest "
                   "(red pixel), strongest first. Ink is dark.")


def crops_zip(channel: int, crops: list[dict]) -> bytes:
    """The crops as PNG files (ink dark, the firing pixel red) plus their positions."""
    import json

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for rank, crop in enumerate(crops):
            origin = crop.get("crop_origin")
            mark = (crop["row"] - origin[0], crop["col"] - origin[1]) if origin else None
            png = io.BytesIO()
            Image.fromarray(ui.crop_image(crop["crop"], mark)).save(png, format="PNG")
            archive.writestr(f"channel{channel}-{rank:02d}-seed{crop['seed']}.png",
                             png.getvalue())
        archive.writestr("crops.json", json.dumps(crops, indent=2))
    return buffer.getvalue()


if crops:
    st.download_button("Crops (zip of PNGs + JSON)", crops_zip(channel, crops),
                       file_name=f"{model_id}-channel{channel}-crops.zip",
                       mime="application/zip", key="channel_export_crops",
                       icon=":material/download:")
