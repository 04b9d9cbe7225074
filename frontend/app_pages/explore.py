"""Explore: one image, every active motif where it fires, the decoded sequence, and (for
samples of the model's domain) how each ground-truth motif was found."""

import streamlit as st

from frontend import api_client as api
from frontend.app_pages import _common as ui

st.title("Explore motifs")
model_id = ui.current_model()
mapping = ui.assignment(model_id)
detail = ui.call(api.get_model, model_id, what=f"read checkpoint {model_id}")
domain = detail.get("domain") or "digit-circle"
symbols = ui.domain_info(domain).get("symbols") or []

pick, options = st.columns([3, 2], vertical_alignment="bottom")
source = pick.radio("Image", [f"A sample of {domain}", "Upload an image"],
                    horizontal=True, key="explore_source")

image = None
label = None
analysis = None
if source.startswith("A sample"):
    ui.seed_from_url("explore_seed")
    seed = int(options.number_input(
        "Seed", min_value=0, max_value=2**31 - 1, value=0, step=1, key="explore_seed",
        help=f"Every seed draws one {domain} image, deterministically (for a folder of "
             "images: the index of a training image)"))
    ui.set_url(seed=seed)
    sample = ui.call(api.get_sample, model_id, seed, what=f"get sample {seed}",
                     control="the Seed")
    result = ui.call(api.activations_for_sample, model_id, seed, what="run the model")
    analysis = ui.call(api.analysis_for_sample, model_id, seed, what="analyse the sample")
    image, label = sample["image"], sample["label"]
else:
    ui.set_url(seed=None)
    fit = options.selectbox(
        "If the image is not the model's size", ["pad", "resize", "none"], key="explore_fit",
        help="pad: centre it (padding or cropping); resize: nearest-neighbour; none: refuse")
    upload = st.file_uploader("PNG, JPEG or NPY image; ink bright on dark, like the samples "
                              "(grey levels above 127 count as ink)",
                              type=["png", "jpg", "jpeg", "npy"], key="explore_upload")
    if upload is None:
        st.info("Upload an image to see its motifs, or switch to a generated sample.")
        st.stop()
    data = upload.getvalue()
    result = ui.call(api.activations_for_upload, model_id, upload.name, data,
                     upload.type or "application/octet-stream", fit,
                     what=f"run the model on {upload.name}",
                     control="the uploaded file and the 'If the image is not the model's "
                             "size' choice")
    image = result.get("image")  # the backend may echo the image it saw
    if image is None:
        preview = ui.decode_upload(upload.name, data)
        if preview is not None:
            image = ui.fit_for_display(preview, result["height"], result["width"], fit)
        if image is None:
            st.caption("The upload cannot be previewed here; motifs are drawn on a blank "
                       "canvas of the model's size.")

activations = result["activations"]
present = sorted({int(a["channel"]) for a in activations})
all_channels = list(range(int(result.get("channels") or 10)))

left, right = st.columns([3, 2], gap="large")
with right:
    ui.show_sequence(result.get("tokens", result["sequence"]), result["probabilities"], label)
    ui.show_decode_warnings(result)
    c1, c2 = st.columns(2)
    c1.metric("Active motifs", result["n_active"])
    c2.metric("Density", f"{result['density']:.2e}")
    pills_key = f"explore_channels_{len(all_channels)}"
    shown = st.pills(
        "Channels to draw", all_channels, selection_mode="multi", default=all_channels,
        wrap=True, key=pills_key,
        format_func=lambda c: ui.channel_name(c, mapping) + (
            "" if c in present else " · silent here"),
        help="Click a channel to hide or show its motifs; each is tinted with its markers' "
             "colour. 'silent here': the channel does not fire on this image.")
    ui.tint_pills(pills_key, [ui.channel_colour(c, mapping, symbols) for c in all_channels])

found = analysis["motifs"] if analysis else []
false_positives = analysis["false_positives"] if analysis else []
drawn = ui.strongest(activations, channels=shown)
drawn_fp = ui.strongest(false_positives, ui.MAX_FALSE_POSITIVES, channels=shown)
with left:
    fig = ui.motif_figure(image, result["height"], result["width"], drawn, mapping=mapping,
                          motifs=found, false_positives=drawn_fp, fig_height=700,
                          symbols=symbols)
    st.plotly_chart(fig, key="explore_figure")
    on_shown = len(ui.strongest(activations, limit=len(activations), channels=shown))
    if len(drawn) < on_shown:
        st.warning(f"This map is far from sparse: drawing the {len(drawn):,} strongest of "
                   f"{on_shown:,} active motifs on the chosen channels.", icon=":material/warning:")
    legend = ("Grey: the image. Markers: active motifs, coloured by the symbol their channel "
              "is assigned to (channels sharing a symbol differ in shape; hover for the "
              "value).")
    if analysis:
        legend += (" Boxes: ground-truth motifs, green = hit, orange dotted = confused (a "
                   "channel assigned to another symbol), red dashed = missed. Red rings: false "
                   "positives (active outside every motif box).")
    st.caption(legend)

with right:
    if analysis:
        counts = {s: sum(d["status"] == s for d in found) for s in ("hit", "confused", "missed")}
        st.markdown(f"**Ground truth**: {len(found)} motifs: {counts['hit']} hit, "
                    f"{counts['confused']} confused, {counts['missed']} missed; "
                    f"{len(false_positives)} false-positive pixels.")
        st.dataframe([{"symbol": d["symbol"], "status": d["status"],
                       "channel": d.get("channel"),
                       "channel's symbol": mapping.get(d["channel"])
                       if d.get("channel") is not None else None,
                       "value": None if d.get("value") is None else round(d["value"], 3)}
                      for d in found],
                     hide_index=True, width="stretch")
    elif source.startswith("Upload"):
        st.caption("Uploads have no ground truth, so nothing is marked hit or missed.")

with st.expander("Channel-to-symbol assignment", expanded=bool(analysis)):
    if mapping:
        if detail.get("assignment_kind") == "many-to-one":
            st.caption("From the checkpoint's evaluation: each channel is assigned to the "
                       "symbol it most often fires on (many-to-one: several channels may "
                       "share a symbol).")
        else:
            st.caption("From the checkpoint's evaluation: the one-to-one assignment that best "
                       "matches channels to the symbols they fire on (Hungarian algorithm).")
        st.dataframe([{"channel": c, "symbol": d, "active here": c in present}
                      for c, d in sorted(mapping.items())], hide_index=True, width="content")
    else:
        st.caption("This checkpoint has no evaluation yet, so channels are not assigned to "
                   "symbols (run `sparling evaluate`).")

with st.expander("Export"):
    name = f"{model_id}-seed{seed}" if source.startswith("A sample") else f"{model_id}-upload"
    c1, c2 = st.columns(2)
    ui.download_json("Activations (JSON)", result, f"{name}-activations.json",
                     "explore_export_activations", c1)
    if analysis:
        ui.download_json("Analysis (JSON)", analysis, f"{name}-analysis.json",
                         "explore_export_analysis", c2)
    st.download_button("Figure (PNG)",
                       ui.figure_png(image, result["height"], result["width"], drawn,
                                     mapping=mapping, symbols=symbols, motifs=found),
                       file_name=f"{name}-motifs.png", mime="image/png",
                       key="explore_export_png", icon=":material/download:")
    st.caption("The PNG shows the channels drawn above; the plot's camera icon saves the "
               "interactive view as it is.")

