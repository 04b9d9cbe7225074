"""Pieces the pages share: error display, the checkpoint picker, the motif overlay figure,
the decoded-sequence block. Not a page itself (st.navigation lists only the pages)."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from frontend import api_client as api

T = TypeVar("T")

MODEL_KEY = "model_id"  # session-state key of the sidebar checkpoint picker
DEFAULT_KEY = "_default_model"  # the backend's default model (GET /v1/models "default")
PICKER_SHOWN = "_picker_shown"  # set by streamlit_app.py when it rendered the picker
END = "end"

# Colours go to symbols, not channels: a channel takes the colour of the symbol it is
# assigned to, so one symbol has one colour on every page and on both sides of Compare.
# Tableau 10 without its grey, then Plotly's longer palette without its greys: no marker may
# vanish into the grey ink.
SYMBOL_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                  "#e377c2", "#17becf", "#bcbd22", "#0b3d91", "#E15F99", "#1CA71C", "#FB0D0D",
                  "#DA16FF", "#B68100", "#750D86", "#EB663B", "#511CFB", "#00A08B", "#FC0080",
                  "#6C7C32", "#862A16", "#A777F1", "#620042", "#1616A7", "#2E91E5"]
# Channels that share a symbol (many-to-one) share its colour and differ in shape.
MARKER_SHAPES = ["circle", "square", "diamond", "triangle-up", "pentagon", "hexagon",
                 "triangle-down", "cross", "star-diamond", "hourglass"]
CHANNEL_COLOURS = SYMBOL_COLOURS  # kept for callers that colour by channel index
STATUS_STYLE = {  # ground-truth box colour and dash, by alignment status
    "hit": ("#1a9641", "solid"),
    "confused": ("#e66101", "dot"),
    "missed": ("#d7191c", "dash"),
    "truth": ("#3b5b92", "solid"),  # a ground-truth box with no alignment status
}


MAX_MARKERS = 1500  # beyond this a map is far from sparse; draw only its strongest motifs
MAX_FALSE_POSITIVES = 300  # rings drawn around false positives, at most


def strongest(points: Sequence[dict], limit: int = MAX_MARKERS,
              channels: Sequence[int] | None = None) -> list[dict]:
    """The points on `channels` (all when None), the `limit` largest values first."""
    keep = set(channels) if channels is not None else None
    chosen = [p for p in points if keep is None or int(p["channel"]) in keep]
    if len(chosen) > limit:
        chosen = sorted(chosen, key=lambda p: -float(p["value"]))[:limit]
    return chosen


def channel_colour(channel: int, mapping: dict[int, str] | None = None,
                   symbols: Sequence[str] = ()) -> str:
    """The colour of `channel`: its assigned symbol's colour (the symbol's place in the
    domain's `symbols`), else a colour of its own after the symbols' colours."""
    mapping = mapping or {}
    symbols = list(symbols) or sorted(set(mapping.values()))
    symbol = mapping.get(channel)
    if symbol is not None and symbol in symbols:
        return SYMBOL_COLOURS[symbols.index(symbol) % len(SYMBOL_COLOURS)]
    return SYMBOL_COLOURS[(len(symbols) + channel) % len(SYMBOL_COLOURS)]


def channel_shape(channel: int, mapping: dict[int, str] | None = None) -> str:
    """The marker shape: a circle, unless other channels share this channel's symbol; the
    k-th channel of a symbol (by index) takes the k-th shape."""
    mapping = mapping or {}
    symbol = mapping.get(channel)
    if symbol is None:
        return MARKER_SHAPES[0]
    siblings = sorted(c for c, s in mapping.items() if s == symbol)
    return MARKER_SHAPES[siblings.index(channel) % len(MARKER_SHAPES)]


def tint_pills(key: str, colours: Sequence[str]) -> None:
    """Tint the options of the st.pills widget `key` with `colours` (a border and a light
    fill in each option's colour), so a channel toggle looks like its markers."""
    rules = [f".st-key-{key} [data-testid=\"stButtonGroup\"] button:nth-of-type({i + 1}) "
             f"{{ border: 2px solid {c} !important; "
             f"background-color: {c}22 !important; }}"
             for i, c in enumerate(colours)]
    st.html("<style>" + "\n".join(rules) + "</style>")


def domain_info(name: str) -> dict:
    """The backend's description of domain `name` ({} when it does not list it)."""
    listing = call(api.list_domains, what="list the domains").get("domains") or []
    return next((d for d in listing if d.get("name") == name), {})


# --- shareable state: page, model, seed, channel and compared model live in the URL --------
URL_KEYS = ("model", "seed", "channel", "compare")


def url_int(key: str) -> int | None:
    """An integer query parameter, None when absent or not a non-negative integer."""
    value = st.query_params.get(key)
    try:
        number = int(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and number >= 0 else None


def seed_from_url(widget_key: str) -> None:
    """Before a seed widget is drawn: take `?seed=` once per session and page (a reload or a
    shared link shows the same image); afterwards the widget owns the value."""
    flag = f"_url_read_{widget_key}"
    if not st.session_state.get(flag):
        st.session_state[flag] = True
        seed = url_int("seed")
        if seed is not None:
            st.session_state[widget_key] = seed


def set_url(**values: object) -> None:
    """Write query parameters (None removes one); unknown parameters are left alone."""
    for key, value in values.items():
        if value is None:
            st.query_params.pop(key, None)
        elif st.query_params.get(key) != str(value):
            st.query_params[key] = str(value)


def share_link(container=None) -> None:
    """The link to exactly what is shown, with a copy button (st.code has one)."""
    container = container or st.sidebar
    try:
        base = st.context.url or ""
    except Exception:  # noqa: BLE001 - older Streamlit or a test harness without a request
        base = ""
    base = base.split("?")[0]
    query = "&".join(f"{k}={st.query_params[k]}" for k in URL_KEYS if k in st.query_params)
    container.caption("Link to this view (copy with the button)")
    container.code(f"{base}?{query}" if query else base or "(no link)", language=None)


def stale_badge(container=None) -> None:
    """A badge when this run showed remembered answers because the backend was down."""
    since = st.session_state.get(api.STALE_KEY)
    if since:
        import time

        when = time.strftime("%H:%M:%S", time.localtime(since))
        (container or st.sidebar).badge(f"Backend unreachable: showing cached data from {when}",
                                        icon=":material/cloud_off:", color="orange")


# --- talking to the backend ---------------------------------------------------------------
def show_api_error(error: api.ApiError, what: str = "") -> None:
    """Say plainly what failed and where; a Retry button reruns the page (errors are never
    cached, so the page recovers as soon as the backend answers again)."""
    lead = f"**Could not {what}.** " if what else ""
    hint = ""
    if error.unreachable:
        hint = ("\n\nStart the backend (for example `scripts/demo.sh` or `docker compose up`) "
                "or set `SPARLING_API_URL`, then press Retry.")
    elif error.status == 503:
        hint = "\n\nThe backend is up but not ready (still loading checkpoints?). Retry shortly."
    st.error(f"{lead}{error.message}\n\nBackend URL: `{error.url}`{hint}", icon=":material/error:")
    st.button("Retry", key=f"retry-{what or 'call'}", type="primary")


INPUT_STATUSES = (400, 413, 415, 422)  # the request was refused: the input must change


def show_input_problem(error: api.ApiError, control: str) -> None:
    """A refused input: say which control fixes it; no Retry (the same input would fail
    again) and no talk of an outage."""
    st.warning(f"**Check {control}.** {error.message}", icon=":material/edit:")


def call(fn: Callable[..., T], *args: Any, what: str = "", control: str | None = None,
         **kwargs: Any) -> T:
    """Run an API call; on failure show the error and stop this run of the page. With
    `control` (the widget that supplies the input), a 4xx refusal is shown as an input
    warning naming that control instead of an outage."""
    try:
        return fn(*args, **kwargs)
    except api.ApiError as e:
        if control is not None and e.status in INPUT_STATUSES:
            show_input_problem(e, control)
        else:
            show_api_error(e, what)
        st.stop()
        raise  # st.stop() raises; this keeps type checkers honest


def download_json(label: str, payload: Any, file_name: str, key: str, container=None) -> None:
    """A download button for `payload` as indented JSON."""
    import json

    (container or st).download_button(label, json.dumps(payload, indent=2), file_name=file_name,
                                      mime="application/json", key=key,
                                      icon=":material/download:")


def models() -> list[dict]:
    """The loaded checkpoints; stops the page with the error when the backend fails."""
    return call(api.list_models, what="list the checkpoints").get("models") or []


def model_label(model: dict) -> str:
    """id, domain (when not DigitCircle), sparsity kind and E2EE; the nominal density only
    for the quantile-threshold layers, where it is the layer's target."""
    density = model.get("density")
    text = model["id"]
    if model.get("domain") and model["domain"] != "digit-circle":
        text += f"  ·  {model['domain']}"
    kind = model.get("sparsity")
    if isinstance(kind, str):
        text += f"  ·  {kind.upper()}"
    e2ee = (model.get("metrics") or {}).get("e2ee")
    if isinstance(e2ee, int | float):
        text += f"  ·  E2EE {e2ee:.2f}%"
    if density is not None and kind in ("mt", "st", "topk"):
        text += f"  ·  density {density:.2e}"
    return text


def model_picker(available: list[dict], container=None, *, key: str = MODEL_KEY,
                 label: str = "Checkpoint", index: int = 0) -> str | None:
    """A selectbox of the loaded checkpoints; returns the chosen id (None when none).
    The choice is remembered under `_<key>` too, so it survives pages that do not show
    this picker (Streamlit forgets the state of widgets that are not rendered)."""
    container = container or st.sidebar
    if not available:
        container.warning("The backend has no checkpoints loaded. Put checkpoint folders in "
                          "the folder named by `SPARLING_CHECKPOINTS` and restart it.")
        return None
    by_id = {m["id"]: m for m in available}
    url_key = "model" if key == MODEL_KEY else None
    if url_key and not st.session_state.get(f"_url_read_{key}"):
        st.session_state[f"_url_read_{key}"] = True  # a shared link names the model
        if st.query_params.get(url_key) in by_id:
            st.session_state[key] = st.query_params[url_key]
    if st.session_state.get(key) not in by_id:  # first run, or the checkpoint went away
        remembered = st.session_state.get(f"_{key}")
        default = st.session_state.get(DEFAULT_KEY)
        st.session_state[key] = (
            remembered if remembered in by_id
            else default if index == 0 and default in by_id
            else available[min(index, len(available) - 1)]["id"])
    choice = container.selectbox(label, list(by_id), key=key,
                                 format_func=lambda i: model_label(by_id[i]))
    # the whole label, never cut off (a narrow sidebar ellipsises the selectbox's text)
    container.caption(f"Showing: {model_label(by_id[choice])}")
    st.session_state[f"_{key}"] = choice
    if url_key:
        set_url(**{url_key: choice})
    return choice


def current_model() -> str:
    """The checkpoint chosen in the sidebar (rendering the picker when a page runs on its
    own); stops the page with a message when there is none."""
    if st.session_state.get(PICKER_SHOWN):  # streamlit_app.py rendered it in this run
        model_id = st.session_state.get(MODEL_KEY)
    else:
        model_id = model_picker(models())
    if model_id is None:
        st.info("No checkpoint to show. Train one with `sparling train` and restart the "
                "backend.")
        st.stop()
    return model_id


def assignment(model_id: str) -> dict[int, str]:
    """The checkpoint's evaluated channel -> symbol map (several channels may share a symbol
    when the domain assigns many-to-one); {} before an evaluation."""
    detail = call(api.get_model, model_id, what=f"read checkpoint {model_id}")
    mapping = detail.get("assignment") or {}
    return {int(c): str(d) for c, d in mapping.items()}


def channel_name(channel: int, mapping: dict[int, str]) -> str:
    symbol = mapping.get(channel)
    return f"ch {channel} → {symbol}" if symbol is not None else f"ch {channel}"


# --- images -------------------------------------------------------------------------------
def decode_upload(name: str, data: bytes) -> np.ndarray | None:
    """The uploaded image as the backend sees it, for display only: a 2-D array of ink
    (1) and background (0); grey levels > 127 (or floats > 0.5) are ink. The backend
    decodes the file itself; None when it cannot be read here."""
    try:
        if name.lower().endswith(".npy"):
            array = np.load(io.BytesIO(data), allow_pickle=False)
        else:
            from PIL import Image  # Streamlit depends on Pillow

            array = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
    except Exception:  # noqa: BLE001 - any unreadable upload simply gets no preview
        return None
    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        array = array[..., :3].astype(float).mean(axis=2)
    if array.ndim != 2 or array.size == 0:
        return None
    array = array.astype(float)
    threshold = 0.5 if array.max() <= 1.0 else 127.0
    return (array > threshold).astype(float)


def _centred(length: int, size: int) -> tuple[int, int, int]:
    """(source start, destination start, count) placing `length` centrally in `size`."""
    if length <= size:
        return 0, (size - length) // 2, length
    return (length - size) // 2, 0, size


def fit_for_display(array: np.ndarray, height: int, width: int, fit: str) -> np.ndarray | None:
    """Bring a preview to the model's size as the backend's `fit` does (centred pad / crop,
    or nearest-neighbour resize); None when the sizes disagree and `fit` is "none"."""
    h, w = array.shape
    if (h, w) == (height, width):
        return array
    if fit == "resize":
        rows = np.minimum((np.arange(height) + 0.5) * h / height, h - 1).astype(int)
        cols = np.minimum((np.arange(width) + 0.5) * w / width, w - 1).astype(int)
        return array[rows][:, cols]
    if fit == "pad":
        out = np.zeros((height, width))
        src_r, dst_r, n_r = _centred(h, height)
        src_c, dst_c, n_c = _centred(w, width)
        out[dst_r:dst_r + n_r, dst_c:dst_c + n_c] = array[src_r:src_r + n_r, src_c:src_c + n_c]
        return out
    return None


def motif_figure(image: Sequence[Sequence[float]] | np.ndarray | None, height: int, width: int,
                 activations: Sequence[dict], *, mapping: dict[int, str] | None = None,
                 channels: Sequence[int] | None = None, motifs: Sequence[dict] = (),
                 false_positives: Sequence[dict] = (), removed: Sequence[dict] = (),
                 added: Sequence[dict] = (), fig_height: int = 560,
                 symbols: Sequence[str] = ()) -> go.Figure:
    """The image in grey with every active motif as a marker coloured by its channel's
    symbol (`symbols`: the domain's, which fixes each symbol's colour; the value on hover),
    ground-truth boxes coloured by status and false positives ringed. The legend is
    always shown."""
    mapping = mapping or {}
    shown = set(channels) if channels is not None else None
    fig = go.Figure()
    z = np.zeros((height, width)) if image is None else np.asarray(image, dtype=float)
    fig.add_trace(go.Heatmap(
        z=z, colorscale=[[0.0, "#ffffff"], [1.0, "#9a9a9a"]], zmin=0, zmax=1, showscale=False,
        hovertemplate="row %{y}, col %{x}<br>pixel %{z:.2f}<extra></extra>", name="image"))

    for motif in motifs:
        r0, c0, r1, c1 = motif["box"]
        colour, dash = STATUS_STYLE.get(motif["status"], ("#333333", "solid"))
        fig.add_shape(type="rect", x0=c0 - 0.5, x1=c1 - 0.5, y0=r0 - 0.5, y1=r1 - 0.5,
                      line={"color": colour, "width": 2.5, "dash": dash})
        text = (str(motif["symbol"]) if motif["status"] == "truth"
                else f"{motif['symbol']}: {motif['status']}")
        if motif["status"] == "confused" and motif.get("channel") is not None:
            text += f" (ch {motif['channel']})"
        fig.add_annotation(x=(c0 + c1 - 1) / 2, y=r0 - 0.5, yanchor="bottom", text=text,
                           showarrow=False, font={"color": colour, "size": 12},
                           bgcolor="rgba(255,255,255,0.8)")

    by_channel: dict[int, list[dict]] = {}
    for a in activations:
        by_channel.setdefault(int(a["channel"]), []).append(a)
    # big markers for a sparse map (a handful of motifs), small ones when it is crowded
    size = 14 if len(activations) <= 60 else 9 if len(activations) <= 400 else 6
    # where several channels fire at one pixel, each later one is drawn smaller, so every
    # marker keeps a visible ring
    stacked: dict[tuple[int, int], int] = {}
    for channel in sorted(by_channel):
        if shown is not None and channel not in shown:
            continue
        points = by_channel[channel]
        name = channel_name(channel, mapping)
        sizes = []
        for p in points:
            place = (int(p["row"]), int(p["col"]))
            depth = stacked.get(place, 0)
            stacked[place] = depth + 1
            sizes.append(max(4.0, size * 0.7 ** depth))
        fig.add_trace(go.Scatter(
            x=[p["col"] for p in points], y=[p["row"] for p in points], mode="markers",
            name=name, customdata=[p["value"] for p in points], showlegend=True,
            marker={"size": sizes, "color": channel_colour(channel, mapping, symbols),
                    "symbol": channel_shape(channel, mapping), "opacity": 0.9,
                    "line": {"color": "#111111", "width": 1 if size > 6 else 0.5}},
            hovertemplate=f"{name}<br>row %{{y}}, col %{{x}}<br>value %{{customdata:.3f}}"
                          "<extra></extra>"))
    if not by_channel:  # the legend still says what would be drawn
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", showlegend=True,
                                 name="no active motifs", marker={"color": "#ffffff"}))
    for status in sorted({m["status"] for m in motifs}):  # box styles in the legend
        colour, dash = STATUS_STYLE.get(status, ("#333333", "solid"))
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", showlegend=True,
                                 name="ground truth" if status == "truth" else f"box: {status}",
                                 line={"color": colour, "dash": dash, "width": 2.5}))

    if false_positives:  # a red ring around the motif, which stays visible inside it
        fig.add_trace(go.Scatter(
            x=[p["col"] for p in false_positives], y=[p["row"] for p in false_positives],
            mode="markers", name="false positive",
            customdata=[[p["channel"], p["value"]] for p in false_positives],
            marker={"symbol": "circle-open", "size": size + 8, "color": "#d7191c",
                    "line": {"width": 2 if size > 6 else 1, "color": "#d7191c"}},
            hovertemplate="false positive: ch %{customdata[0]}<br>row %{y}, col %{x}<br>"
                          "value %{customdata[1]:.3f}<extra></extra>"))
    if removed:
        fig.add_trace(go.Scatter(
            x=[p["col"] for p in removed], y=[p["row"] for p in removed], mode="markers",
            name="removed", customdata=[p["channel"] for p in removed],
            marker={"symbol": "circle-x-open", "size": 18, "color": "#444444",
                    "line": {"width": 2, "color": "#444444"}},
            hovertemplate="removed: ch %{customdata}<br>row %{y}, col %{x}<extra></extra>"))
    if added:
        fig.add_trace(go.Scatter(
            x=[p["col"] for p in added], y=[p["row"] for p in added], mode="markers",
            name="added", customdata=[[p["channel"], p["value"]] for p in added],
            marker={"symbol": "star", "size": 20,
                    "color": [channel_colour(p["channel"], mapping, symbols) for p in added],
                    "line": {"width": 1.5, "color": "#111111"}},
            hovertemplate="added: ch %{customdata[0]}<br>row %{y}, col %{x}<br>"
                          "value %{customdata[1]:.3f}<extra></extra>"))

    fig.update_xaxes(range=[-0.5, width - 0.5], showgrid=False, zeroline=False,
                     constrain="domain", title_text="column")
    fig.update_yaxes(range=[height - 0.5, -0.5], showgrid=False, zeroline=False,
                     scaleanchor="x", constrain="domain", title_text="row")
    # the legend sits in the bottom margin of the figure, clear of the axis title
    fig.update_layout(height=fig_height, margin={"l": 10, "r": 10, "t": 30, "b": 90},
                      showlegend=True,
                      plot_bgcolor="white", hoverlabel={"bgcolor": "white"},
                      legend={"orientation": "h", "yref": "container", "yanchor": "bottom",
                              "y": 0, "x": 0, "font": {"size": 12}})
    return fig


def figure_png(image: Sequence[Sequence[float]] | np.ndarray | None, height: int, width: int,
               activations: Sequence[dict], *, mapping: dict[int, str] | None = None,
               symbols: Sequence[str] = (), motifs: Sequence[dict] = (),
               scale: int = 4) -> bytes:
    """The motif figure as a PNG file (Pillow, no browser): the image in grey, ground-truth
    boxes in their status colour, every active motif as a dot in its channel's colour, and
    a legend of the channels drawn below the picture."""
    from PIL import Image, ImageDraw

    mapping = mapping or {}
    z = np.zeros((height, width)) if image is None else np.asarray(image, dtype=float)
    grey = (255 - np.clip(z, 0, 1) * (255 - 0x9A)).astype(np.uint8)
    picture = np.kron(np.stack([grey] * 3, -1), np.ones((scale, scale, 1), dtype=np.uint8))
    channels = sorted({int(a["channel"]) for a in activations})
    line_height = 14
    legend_rows = (len(channels) + 3) // 4 if channels else 1
    canvas = Image.new("RGB", (width * scale, height * scale + 8 + legend_rows * line_height),
                       "white")
    canvas.paste(Image.fromarray(picture), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for motif in motifs:
        r0, c0, r1, c1 = motif["box"]
        colour = STATUS_STYLE.get(motif.get("status", "truth"), ("#333333", "solid"))[0]
        draw.rectangle([c0 * scale, r0 * scale, c1 * scale - 1, r1 * scale - 1],
                       outline=colour, width=2)
    radius = max(3, int(scale * 1.5))
    for a in activations:
        x, y = (int(a["col"]) + 0.5) * scale, (int(a["row"]) + 0.5) * scale
        draw.ellipse([x - radius, y - radius, x + radius, y + radius],
                     fill=channel_colour(int(a["channel"]), mapping, symbols), outline="#111111")
    top = height * scale + 8
    column_width = max(1, width * scale // 4)
    for i, channel in enumerate(channels):
        x, y = (i % 4) * column_width + 4, top + (i // 4) * line_height
        draw.rectangle([x, y + 2, x + 9, y + 11], fill=channel_colour(channel, mapping, symbols))
        draw.text((x + 13, y), channel_name(channel, mapping), fill="#111111")
    if not channels:
        draw.text((4, top), "no active motifs", fill="#111111")
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def crop_image(crop: Sequence[Sequence[float]], mark: tuple[int, int] | None = None,
               scale: int = 8) -> np.ndarray:
    """A crop as an RGB uint8 picture, upscaled with square pixels, ink dark on white and
    the pixel `mark` (where the motif fired; default the centre) in red."""
    a = np.asarray(crop, dtype=float)
    grey = (255 - np.clip(a, 0, 1) * 200).astype(np.uint8)
    rgb = np.stack([grey, grey, grey], axis=-1)
    if a.ndim == 2 and a.size:
        r, c = mark if mark is not None else (a.shape[0] // 2, a.shape[1] // 2)
        if 0 <= r < a.shape[0] and 0 <= c < a.shape[1]:
            rgb[r, c] = (215, 25, 28)
    return np.kron(rgb, np.ones((scale, scale, 1), dtype=np.uint8))


# --- decoded sequences --------------------------------------------------------------------
def sequence_text(sequence: Sequence[str | int]) -> str:
    """Tokens joined by spaces (the backend sends each decoded sequence as `tokens`)."""
    return " ".join(str(d) for d in sequence) if sequence else "(empty)"


def confidence_rows(sequence: Sequence[str | int], probabilities: Sequence[float]
                    ) -> list[dict]:
    """One row per emitted token, the end token last, with its probability in percent."""
    tokens = [str(d) for d in sequence] + [END]
    return [{"position": i + 1, "token": tok,
             "confidence %": round(100.0 * float(p), 2)}
            for i, (tok, p) in enumerate(zip(tokens, probabilities, strict=False))]


def show_decode_warnings(result: dict) -> None:
    """The service's reasons to doubt a decode, and the empty-map baseline."""
    for warning in result.get("warnings") or []:
        st.warning(warning, icon=":material/report:")
    empty = result.get("empty_map")
    if empty is not None:
        st.caption(f"Baseline: for an empty map the decoder answers "
                   f"**{sequence_text(empty.get('tokens', empty.get('sequence', [])))}**; "
                   "an answer is only read from the image where it differs from this.")


def show_sequence(sequence: Sequence[str | int], probabilities: Sequence[float],
                  label: Sequence[str | int] | None = None, *,
                  title: str = "Decoded sequence") -> None:
    st.markdown(f"**{title}**")
    st.markdown(f"<div style='font-size:2rem;font-family:monospace;line-height:1.3'>"
                f"{sequence_text(sequence)}</div>", unsafe_allow_html=True)
    if label is not None:
        if [str(t) for t in sequence] == [str(t) for t in label]:
            st.success(f"Matches the ground truth {sequence_text(label)}",
                       icon=":material/check_circle:")
        else:
            st.warning(f"Ground truth is {sequence_text(label)}", icon=":material/cancel:")
    rows = confidence_rows(sequence, probabilities)
    if rows:
        st.dataframe(rows, hide_index=True, width="content")
