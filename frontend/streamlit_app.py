"""Sparling Motif Explorer: the Streamlit entry point.

    streamlit run frontend/streamlit_app.py

Routes with st.navigation to the pages in app_pages/. The checkpoint picker lives here, in
the sidebar, so the choice carries across pages. The backend URL comes from
SPARLING_API_URL (default http://127.0.0.1:8000), an optional key from SPARLING_API_KEY.
"""

import sys
from pathlib import Path

import streamlit as st

# `streamlit run frontend/streamlit_app.py` puts frontend/ (not the repository root) on
# sys.path; make `import frontend` work when the package is not installed.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from frontend import api_client as api  # noqa: E402
from frontend.app_pages import _common  # noqa: E402

st.set_page_config(page_title="Sparling Motif Explorer", page_icon=":material/image_search:",
                   layout="wide")

_PAGES = Path(__file__).parent / "app_pages"
page = st.navigation([
    st.Page(_PAGES / "explore.py", title="Explore", icon=":material/image_search:", default=True),
    st.Page(_PAGES / "channels.py", title="Channels", icon=":material/tune:"),
    st.Page(_PAGES / "alignment.py", title="Alignment", icon=":material/grid_on:"),
    st.Page(_PAGES / "training.py", title="Training", icon=":material/monitoring:"),
    st.Page(_PAGES / "compare.py", title="Compare", icon=":material/compare:"),
    st.Page(_PAGES / "intervene.py", title="Intervene", icon=":material/content_cut:"),
])

# Checkpoint labels (id, sparsity kind, E2EE, density) wrap instead of being cut off with
# an ellipsis, in the closed selectboxes and in their open option lists.
st.html("""<style>
[data-testid="stSelectbox"] [data-baseweb="select"] div {
  white-space: normal !important; overflow: visible !important; text-overflow: clip !important; }
[data-baseweb="popover"] li[role="option"] div {
  white-space: normal !important; overflow: visible !important; text-overflow: clip !important; }
</style>""")
st.sidebar.markdown("### Sparling Motif Explorer")
st.sidebar.caption(f"Backend: `{api.api_url()}`")
if st.sidebar.button("Refresh data", help="Forget cached answers and ask the backend again"):
    st.cache_data.clear()
    api.forget_last_good()
st.session_state[api.STALE_KEY] = None  # set by any call answered from memory in this run

try:
    listing = api.list_models()
except api.ApiError as error:  # say so on whichever page was asked for, then stop
    st.title(page.title)
    _common.show_api_error(error, "reach the backend")
    st.stop()

st.session_state[_common.DEFAULT_KEY] = listing.get("default")
for failed, reason in (listing.get("errors") or {}).items():
    st.sidebar.warning(f"Checkpoint `{failed}` failed to load: {reason}")
# Compare picks its two checkpoints in the page itself.
st.session_state[_common.PICKER_SHOWN] = page.title != "Compare"
if page.title != "Compare":
    _common.model_picker(listing.get("models") or [], st.sidebar)

page.run()
_common.share_link(st.sidebar)  # after the page: it has written its own parameters
_common.stale_badge(st.sidebar)

