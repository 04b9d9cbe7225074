"""Compare: two checkpoints side by side on the same sample of their domain."""

import streamlit as st

from frontend import api_client as api
from frontend.app_pages import _common as ui

st.title("Compare two checkpoints")
available = ui.models()
if not available:
    st.info("The backend has no checkpoints loaded.")
    st.stop()
if len(available) < 2:
    st.info("Only one checkpoint is loaded; both sides show it. Add another checkpoint "
            "folder to compare.")

seed = int(st.number_input("Seed (the same image for both)", min_value=0, max_value=2**31 - 1,
                           value=0, step=1, key="compare_seed"))

sides = st.columns(2, gap="large")
for side, (column, key, index) in enumerate(zip(sides, ("compare_left", "compare_right"),
                                                (0, 1), strict=True)):
    with column:
        model_id = ui.model_picker(available, column, key=key, label=f"Checkpoint {'AB'[side]}",
                                   index=index)
        mapping = ui.assignment(model_id)
        sample = ui.call(api.get_sample, model_id, seed, what=f"get sample {seed}")
        result = ui.call(api.activations_for_sample, model_id, seed, what="run the model")
        analysis = ui.call(api.analysis_for_sample, model_id, seed, what="analyse the sample")
        fig = ui.motif_figure(sample["image"], result["height"], result["width"],
                              ui.strongest(result["activations"]), mapping=mapping,
                              motifs=analysis["motifs"],
                              false_positives=ui.strongest(analysis["false_positives"],
                                                            ui.MAX_FALSE_POSITIVES),
                              fig_height=560)
        st.plotly_chart(fig, key=f"compare_figure_{side}")
        ui.show_sequence(result.get("tokens", result["sequence"]), result["probabilities"],
                         sample["label"])
        digits = analysis["motifs"]
        c1, c2, c3, c4 = st.columns(4)
        c1.metric("Hit", sum(d["status"] == "hit" for d in digits))
        c2.metric("Confused", sum(d["status"] == "confused" for d in digits))
        c3.metric("Missed", sum(d["status"] == "missed" for d in digits))
        c4.metric("False pos.", len(analysis["false_positives"]))
        st.caption(f"{result['n_active']} active motifs, density {result['density']:.2e}")
