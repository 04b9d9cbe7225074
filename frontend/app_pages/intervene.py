"""Intervene: edit the sparse motif map by hand (remove active motifs, add one) and see
what the decoder reads from it."""

import streamlit as st

from frontend import api_client as api
from frontend.app_pages import _common as ui

st.title("Intervene on the motif map")
st.caption("The decoder only sees the sparse motif map. Remove motifs or plant a new one and "
           "watch the decoded sequence change: a direct test of what each motif means.")
model_id = ui.current_model()
mapping = ui.assignment(model_id)

controls, picture = st.columns([2, 3], gap="large")
ui.seed_from_url("intervene_seed")
seed = int(controls.number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, step=1,
                                 key="intervene_seed"))
ui.set_url(seed=seed)
sample = ui.call(api.get_sample, model_id, seed, what=f"get sample {seed}",
                 control="the Seed")
original = ui.call(api.activations_for_sample, model_id, seed, what="run the model")
height, width = int(original["height"]), int(original["width"])
n_channels = int(original.get("channels") or 10)
MAX_OPTIONS = 300  # a multiselect of thousands of motifs helps nobody
active = {(int(a["channel"]), int(a["row"]), int(a["col"])): float(a["value"])
          for a in ui.strongest(original["activations"], MAX_OPTIONS)}
n_active = len(original["activations"])


def _describe(key: tuple[int, int, int]) -> str:
    channel, row, col = key
    return f"{ui.channel_name(channel, mapping)} at ({row}, {col}), value {active[key]:.2f}"


with controls:
    remove = st.multiselect(
        "Remove active motifs", sorted(active, key=lambda k: -active[k]),  # strongest first
        key=f"intervene_remove_{model_id}_{seed}",
        format_func=_describe, placeholder="Pick motifs to zero out",
        help=f"{n_active} motifs are active on this image")
    if n_active > len(active):
        st.caption(f"Listing the {len(active)} strongest of {n_active:,} active motifs.")
    add_one = st.toggle("Add a motif", key="intervene_add")
    added: list[dict] = []
    if add_one:
        typical = max(active.values(), default=1.0)
        c1, c2 = st.columns(2)
        channel = c1.selectbox("Channel", list(range(n_channels)), key="intervene_channel",
                               format_func=lambda c: ui.channel_name(c, mapping))
        value = c2.number_input("Value", min_value=0.0, max_value=1000.0,
                                value=round(typical, 2), step=0.1, key="intervene_value")
        row = c1.slider("Row", 0, height - 1, height // 2, key="intervene_row")
        col = c2.slider("Column", 0, width - 1, width // 2, key="intervene_col")
        added = [{"channel": int(channel), "row": int(row), "col": int(col),
                  "value": float(value)}]

removed = [{"channel": c, "row": r, "col": k} for c, r, k in remove]
if remove or added:
    result = ui.call(api.intervene_on_sample, model_id, seed, tuple(remove),
                     tuple((a["channel"], a["row"], a["col"], a["value"]) for a in added),
                     what="run the intervention")
    before, after = result["before"], result["after"]
    activations_after = result["activations_after"]
else:
    before = after = {"sequence": original["sequence"],
                      "tokens": original.get("tokens", original["sequence"]),
                      "probabilities": original["probabilities"]}
    activations_after = original["activations"]

with picture:
    fig = ui.motif_figure(sample["image"], height, width, ui.strongest(activations_after),
                          mapping=mapping,
                          removed=removed, added=added, fig_height=480)
    st.plotly_chart(fig, key="intervene_figure")

st.divider()
left, right = st.columns(2, gap="large")
with left:
    ui.show_sequence(before.get("tokens", before["sequence"]), before["probabilities"],
                     title="Before (original map)")
with right:
    ui.show_sequence(after.get("tokens", after["sequence"]), after["probabilities"],
                     title="After the edit")
if not (remove or added):
    st.info("Nothing edited yet: pick motifs to remove or add one to see the decoder's answer "
            "change.")
elif list(after["sequence"]) == list(before["sequence"]):
    st.info("The decoded sequence did not change "
            f"({ui.sequence_text(after.get('tokens', after['sequence']))}); "
            "compare the confidences.")
else:
    st.success("The decoded sequence changed: "
               f"{ui.sequence_text(before.get('tokens', before['sequence']))} → "
               f"{ui.sequence_text(after.get('tokens', after['sequence']))}")
st.caption(f"Ground truth of seed {seed}: {ui.sequence_text(sample['label'])}")
if remove or added:
    ui.download_json("Export the intervention (JSON)",
                     {"model": model_id, "seed": seed, "remove": removed, "add": added,
                      **result}, f"{model_id}-seed{seed}-intervention.json",
                     "intervene_export")
