"""Channels: one motif channel at a time: the symbol it aligns with, how often it fires,
how precisely it lands on its symbol, how much the decode depends on it, the distribution
of its values and image patches where it fires (hardest, typically, outside every box).

The backend computes the summaries once per model, in the background from start-up; until
they are ready this page shows the progress and refreshes itself."""

import io
import json
import zipfile
from urllib.parse import quote

import plotly.graph_objects as go
import streamlit as st
from PIL import Image

from frontend import api_client as api
from frontend.app_pages import _common as ui

# crop kind -> heading, and what the gallery shows
SECTIONS = {
    "top_crops": ("Top-activating crops",
                  "Patches of validation images around where this channel fired hardest "
                  "(red pixel), strongest first, one per image."),
    "middle_crops": ("Middle of the value range",
                     "Activations nearest the median of this channel's nonzero values{median}: "
                     "what a typical firing looks like, one per image."),
    "outside_crops": ("Firing outside every box",
                      "Where this channel fired hardest outside every ground-truth motif box "
                      "(boxes padded as in evaluation): its strongest false positives."),
}
REFRESH_S = 2

st.title("Channels")
model_id = ui.current_model()


def show_progress(body: dict) -> None:
    progress = body.get("progress") or {}
    done, total = int(progress.get("done") or 0), int(progress.get("total") or 0)
    st.progress(min(done / total, 1.0) if total else 0.0,
                text=f"Computing the channel summaries: {done} of {total} validation images")
    st.info("The backend computes each checkpoint's channel summaries once, in the "
            "background from start-up. This page checks again every few seconds and shows "
            "them as soon as they are ready.", icon=":material/hourglass_top:")
    st.button("Check again", key="channels_check_again", icon=":material/refresh:")


@st.fragment(run_every=REFRESH_S)
def wait_for(fetch, *args) -> None:
    """Poll `fetch(*args)` while the backend says "computing"; rerun the page when ready."""
    body = ui.call(fetch, *args, what="read the channel statistics")
    if body.get("status") != "computing":
        st.rerun()
    show_progress(body)


def ready(fetch, *args) -> dict:
    """`fetch(*args)` once the summaries are ready; until then the progress, and stop."""
    body = ui.call(fetch, *args, what="read the channel statistics")
    if body.get("status") == "computing":
        wait_for(fetch, *args)
        st.stop()
    return body


overview = ready(api.get_channels, model_id)["channels"]
if not overview:
    st.info("This checkpoint reports no channels.")
    st.stop()
by_channel = {int(c["channel"]): c for c in overview}


def _describe(c: int) -> str:
    symbol = by_channel[c].get("symbol")
    return f"Channel {c}" + (f" → {symbol}" if symbol is not None else " (unassigned)")


def precision_text(summary: dict) -> str:
    precision = summary.get("precision")
    return "—" if precision is None else f"{precision:.1%}"


def effect_text(summary: dict) -> str:
    effect = summary.get("effect") or {}
    return f"{effect['changed']} of {effect['n']}" if effect.get("n") else "—"


def explore_link(seed: int) -> str:
    """The Explore page (the app's default page, at /) on this model and image."""
    return f"./?model={quote(model_id)}&seed={int(seed)}"


def crop_picture(crop: dict):
    origin = crop.get("crop_origin")
    mark = (crop["row"] - origin[0], crop["col"] - origin[1]) if origin else None
    return ui.crop_image(crop["crop"], mark)


def gallery(crops: list[dict], per_row: int = 4) -> None:
    """Crops in rows; each links to its image in Explore."""
    for start in range(0, len(crops), per_row):
        cols = st.columns(per_row)
        for col, crop in zip(cols, crops[start:start + per_row], strict=False):
            link = explore_link(crop["seed"])
            col.image(crop_picture(crop), link=link)
            col.markdown(f"[seed {crop['seed']}]({link}) · ({crop['row']}, {crop['col']}) · "
                         f"{crop['value']:.2f}", help="Open this image in Explore")


pick_key = f"channel_pick_{model_id}"
if not st.session_state.get(f"_url_read_{pick_key}"):  # a shared link names the channel
    st.session_state[f"_url_read_{pick_key}"] = True
    if ui.url_int("channel") in by_channel:
        st.session_state[pick_key] = ui.url_int("channel")
channel = st.selectbox("Channel", list(by_channel), key=pick_key, format_func=_describe)
ui.set_url(channel=channel)
info = ready(api.get_channel, model_id, channel)

c1, c2, c3, c4 = st.columns(4)
c1.metric("Aligned symbol", "—" if info.get("symbol") is None else info["symbol"])
c2.metric("Realised density", f"{info['density']:.2e}")
c3.metric("Precision", precision_text(info),
          help="Share of this channel's activations inside a box of its own symbol (boxes "
               "padded as in evaluation); — when unassigned or it never fires.")
c4.metric("Decode changes without it", effect_text(info),
          help="Validation images whose decoded answer changes when this channel is removed "
               "from the sparse map (zeroed).")

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
                   "density": f"{c['density']:.2e}", "precision": precision_text(c),
                   "decode changes": effect_text(c)} for c in overview],
                 hide_index=True, width="stretch")

crops_by_kind = {kind: info.get(kind) or [] for kind in SECTIONS}
with right:
    median = info.get("median")
    for kind, (heading, caption) in SECTIONS.items():
        st.subheader(heading)
        crops = crops_by_kind[kind]
        if not crops:
            st.caption("None: this channel never fired there on the images the backend "
                       "looked at.")
            continue
        gallery(crops)
        st.caption(caption.format(median=f" ({median:.3g})" if median is not None else "")
                   + " Ink is dark; click a crop to open its image in Explore.")


def crops_zip(channel: int, crops_by_kind: dict[str, list[dict]]) -> bytes:
    """The crops as PNG files named by kind (ink dark, the firing pixel red) plus their
    positions in crops.json ({kind: [crop, ...]})."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for kind, crops in crops_by_kind.items():
            name = kind.removesuffix("_crops")
            for rank, crop in enumerate(crops):
                png = io.BytesIO()
                Image.fromarray(crop_picture(crop)).save(png, format="PNG")
                archive.writestr(f"channel{channel}-{name}-{rank:02d}-seed{crop['seed']}.png",
                                 png.getvalue())
        archive.writestr("crops.json", json.dumps(crops_by_kind, indent=2))
    return buffer.getvalue()


if any(crops_by_kind.values()):
    st.download_button("Crops (zip of PNGs + JSON)", crops_zip(channel, crops_by_kind),
                       file_name=f"{model_id}-channel{channel}-crops.zip",
                       mime="application/zip", key="channel_export_crops",
                       icon=":material/download:")
