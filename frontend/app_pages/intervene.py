"""Intervene: edit the sparse motif map by hand (remove active motifs, add one) and see
what the decoder reads from it."""

import difflib

import streamlit as st

from frontend import api_client as api
from frontend.app_pages import _common as ui

st.title("Intervene on the motif map")
st.caption("The decoder only sees the sparse motif map. Remove motifs or plant a new one and "
           "watch the decoded sequence change: a direct test of what each motif means.")
model_id = ui.current_model()
mapping = ui.assignment(model_id)
domain = ui.call(api.get_model, model_id, what=f"read checkpoint {model_id}").get(
    "domain") or "digit-circle"
info = ui.domain_info(domain)
symbols = info.get("symbols") or []

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


def token_diff(before: list[str], after: list[str]) -> list[dict]:
    """Token-by-token alignment of two decodes (difflib): kept, changed, added, dropped."""
    rows = []
    kinds = {"equal": "kept", "replace": "changed", "insert": "added", "delete": "dropped"}
    matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    for op, i0, i1, j0, j1 in matcher.get_opcodes():
        for k in range(max(i1 - i0, j1 - j0)):
            rows.append({"before": before[i0 + k] if i0 + k < i1 else "",
                         "after": after[j0 + k] if j0 + k < j1 else "",
                         "change": kinds[op]})
    return rows


additions_key = f"_intervene_additions_{model_id}_{seed}"
additions: list[dict] = st.session_state.setdefault(additions_key, [])
with controls:
    remove = st.multiselect(
        "Remove active motifs", sorted(active, key=lambda k: -active[k]),  # strongest first
        key=f"intervene_remove_{model_id}_{seed}", select_all=False,
        format_func=_describe, placeholder="Pick motifs to zero out",
        help=f"{n_active} motifs are active on this image")
    if n_active > len(active):
        st.caption(f"Listing the {len(active)} strongest of {n_active:,} active motifs.")
    if st.toggle("Add motifs", key="intervene_add"):
        typical = max(active.values(), default=1.0)
        c1, c2 = st.columns(2)
        channel = c1.selectbox("Channel", list(range(n_channels)), key="intervene_channel",
                               format_func=lambda c: ui.channel_name(c, mapping))
        value = c2.number_input("Value", min_value=0.0, max_value=1000.0,
                                value=round(typical, 2), step=0.1, key="intervene_value")
        row = c1.slider("Row", 0, height - 1, height // 2, key="intervene_row")
        col = c2.slider("Column", 0, width - 1, width // 2, key="intervene_col")
        if st.button("Add this motif", key="intervene_add_one", icon=":material/add:"):
            motif = {"channel": int(channel), "row": int(row), "col": int(col),
                     "value": float(value)}
            if motif not in additions:
                additions.append(motif)
        if additions:
            st.dataframe([{"channel": ui.channel_name(a["channel"], mapping), "row": a["row"],
                           "col": a["col"], "value": a["value"]} for a in additions],
                         hide_index=True, width="stretch")
            if st.button("Clear the additions", key="intervene_clear"):
                additions.clear()
                st.rerun()
        else:
            st.caption("Set a channel, value and place, then press *Add this motif*; add as "
                       "many as you like.")
added = list(additions)

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
    truth = [{"symbol": m["symbol"], "box": m["box"], "status": "truth"}
             for m in sample.get("motifs") or []]
    fig = ui.motif_figure(sample["image"], height, width, ui.strongest(activations_after),
                          mapping=mapping, motifs=truth, symbols=symbols,
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
if remove or added:
    st.markdown("**Token by token**")
    st.dataframe(token_diff([str(t) for t in before.get("tokens", before["sequence"])],
                            [str(t) for t in after.get("tokens", after["sequence"])]),
                 hide_index=True, width="content")
if info.get("label_rule"):
    st.caption(f"How a {domain} label is read off the image: {info['label_rule']}.")
st.caption(f"Ground truth of seed {seed}: {ui.sequence_text(sample['label'])}")
st.download_button("Figure (PNG)",
                   ui.figure_png(sample["image"], height, width,
                                 ui.strongest(activations_after), mapping=mapping,
                                 symbols=symbols, motifs=truth),
                   file_name=f"{model_id}-seed{seed}-intervention.png", mime="image/png",
                   key="intervene_export_png", icon=":material/download:")
if remove or added:
    ui.download_json("Export the intervention (JSON)",
                     {"model": model_id, "seed": seed, "remove": removed, "add": added,
                      **result}, f"{model_id}-seed{seed}-intervention.json",
                     "intervene_export")
