"""Compare: two checkpoints side by side on the same sample of their domain."""

import os

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

def closest_ablation(left: str, models: list[dict]) -> str | None:
    """The model to compare `left` with by default: the paper's comparison (ablation-st) for
    a DigitCircle model, else another model of the same domain sharing the longest prefix."""
    domain = {m["id"]: m.get("domain") for m in models}
    others = [m["id"] for m in models if m["id"] != left
              and domain.get(m["id"]) == domain.get(left)]
    if "ablation-st" in others:
        return "ablation-st"
    if not others:
        return None
    return max(others, key=lambda i: (len(os.path.commonprefix([i, left])), i.startswith(
        "ablation-")))


by_id = {m["id"]: m for m in available}
if not st.session_state.get("_url_read_compare"):  # a shared link or the defaults
    st.session_state["_url_read_compare"] = True
    left = st.query_params.get("model")
    left = left if left in by_id else st.session_state.get(ui.DEFAULT_KEY)
    left = left if left in by_id else available[0]["id"]
    right = st.query_params.get("compare")
    right = right if right in by_id else closest_ablation(left, available)
    st.session_state["compare_left"] = left
    if right is not None:
        st.session_state["compare_right"] = right

ui.seed_from_url("compare_seed")
seed = int(st.number_input("Seed (the same image for both)", min_value=0, max_value=2**31 - 1,
                           value=0, step=1, key="compare_seed"))
ui.set_url(seed=seed)

sides = st.columns(2, gap="large")
for side, (column, key, index) in enumerate(zip(sides, ("compare_left", "compare_right"),
                                                (0, 1), strict=True)):
    with column:
        model_id = ui.model_picker(available, column, key=key, label=f"Checkpoint {'AB'[side]}",
                                   index=index)
        ui.set_url(**{("model", "compare")[side]: model_id})
        mapping = ui.assignment(model_id)
        domain = next((m.get("domain") for m in available if m["id"] == model_id), None)
        symbols = ui.domain_info(domain or "digit-circle").get("symbols") or []
        sample = ui.call(api.get_sample, model_id, seed, what=f"get sample {seed}")
        result = ui.call(api.activations_for_sample, model_id, seed, what="run the model")
        analysis = ui.call(api.analysis_for_sample, model_id, seed, what="analyse the sample")
        fig = ui.motif_figure(sample["image"], result["height"], result["width"],
                              ui.strongest(result["activations"]), mapping=mapping,
                              motifs=analysis["motifs"],
                              false_positives=ui.strongest(analysis["false_positives"],
                                                            ui.MAX_FALSE_POSITIVES),
                              fig_height=560, symbols=symbols)
        st.plotly_chart(fig, key=f"compare_figure_{side}")
        ui.show_sequence(result.get("tokens", result["sequence"]), result["probabilities"],
                         sample["label"])
        ui.show_decode_warnings(result)
        digits = analysis["motifs"]
        c1, c2, c3, c4 = st.columns(4)
        c1.metric("Hit", sum(d["status"] == "hit" for d in digits))
        c2.metric("Confused", sum(d["status"] == "confused" for d in digits))
        c3.metric("Missed", sum(d["status"] == "missed" for d in digits))
        c4.metric("False pos.", len(analysis["false_positives"]))
        st.caption(f"{result['n_active']} active motifs, density {result['density']:.2e}")
