"""Decoding uploaded images: PNG, JPEG or .npy -> a 2-D float32 array of ink (0 / 1).

Colour is converted to grey; 8-bit pixels > 127 are ink, 16-bit > 32767, float > 0.5;
boolean arrays are ink where True; integer arrays holding only 0 and 1 are taken as they
are. The pixel count is checked from the header before anything is decoded.
"""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["MAX_ASPECT_RATIO", "MAX_SIDE", "ImageError", "ImageTooLarge", "check_shape",
           "decode_upload"]

# Any image, uploaded or JSON: at most MAX_SIDE pixels a side and a side ratio of at most
# MAX_ASPECT_RATIO (a 4,000,000 x 1 strip is no picture; it only costs memory).
MAX_SIDE = 10_000
MAX_ASPECT_RATIO = 100

_PNG, _JPEG, _NPY = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"\x93NUMPY"


class ImageError(ValueError):
    """The upload is not a usable image."""


class ImageTooLarge(ImageError):
    """The image has more pixels than allowed."""


_ADDRESS = re.compile(r"<[^<>]*? at 0x[0-9a-fA-F]+>|0x[0-9a-fA-F]{6,}")


def _public(e: BaseException) -> str:
    """An exception's text without object reprs and addresses (`<_io.BytesIO object at
    0x7f...>`), shortened: it goes back to the client."""
    text = _ADDRESS.sub("the upload", str(e))
    return text if len(text) <= 200 else text[:200] + "..."


def decode_upload(data: bytes, max_pixels: int) -> np.ndarray:
    """Bytes of a PNG, JPEG or .npy file -> (H, W) float32 in {0, 1}."""
    if not data:
        raise ImageError("the uploaded file is empty")
    if data.startswith(_NPY):
        return _decode_npy(data, max_pixels)
    if data.startswith(_PNG) or data.startswith(_JPEG):
        return _decode_pillow(data, max_pixels)
    raise ImageError("the upload is not a PNG, JPEG or .npy file")


def check_shape(h: int, w: int) -> None:
    """ImageTooLarge for a side over MAX_SIDE, ImageError for an absurd side ratio."""
    if max(h, w) > MAX_SIDE:
        raise ImageTooLarge(f"the image is {h}x{w} (rows x columns); a side may be at most "
                            f"{MAX_SIDE} pixels")
    if min(h, w) > 0 and max(h, w) > MAX_ASPECT_RATIO * min(h, w):
        raise ImageError(f"the image is {h}x{w} (rows x columns); one side may be at most "
                         f"{MAX_ASPECT_RATIO} times the other")


def _check_pixels(h: int, w: int, max_pixels: int) -> None:
    if h * w > max_pixels:
        raise ImageTooLarge(f"the image is {h}x{w} = {h * w} pixels, more than the "
                            f"{max_pixels} allowed")
    check_shape(h, w)


def _decode_pillow(data: bytes, max_pixels: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=["PNG", "JPEG"]) as im:
                w, h = im.size  # from the header: nothing decoded yet
                _check_pixels(h, w, max_pixels)
                im.load()
                return _pillow_ink(im)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLarge(f"the image is too large to decode ({_public(e)})") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError("the image cannot be decoded; is it truncated or corrupt? "
                         f"({_public(e)})") from e


def _pillow_ink(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im, dtype=np.float64)
        return (arr > 32767).astype(np.float32)
    if im.mode == "F":
        return (np.asarray(im, dtype=np.float64) > 0.5).astype(np.float32)
    return (np.asarray(im.convert("L")) > 127).astype(np.float32)


def _decode_npy(data: bytes, max_pixels: int) -> np.ndarray:
    f = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ImageError(f".npy format version {version} is not supported (use 1.0 or 2.0)")
    except ImageError:
        raise
    except (ValueError, OSError, SyntaxError, TypeError) as e:
        raise ImageError(f"the .npy header cannot be read ({_public(e)})") from e
    if dtype.hasobject or dtype.kind not in "biuf" or dtype.shape:
        raise ImageError(f"the .npy array must hold numbers (bool, int or float), not {dtype}")
    if len(shape) == 3 and shape[2] in (1, 3, 4):
        h, w, channels = shape
    elif len(shape) == 2:
        (h, w), channels = shape, 1
    else:
        raise ImageError(f"the .npy array must be (H, W) or (H, W, 1 / 3 / 4), got {shape}")
    _check_pixels(h, w, max_pixels)
    if len(data) - f.tell() != h * w * channels * dtype.itemsize:
        raise ImageError("the .npy file is truncated (its data does not match its header)")
    f.seek(0)
    try:
        arr = np.load(f, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ImageError(f"the .npy file cannot be read ({_public(e)})") from e
    if arr.ndim == 3:
        arr = arr[..., :3].astype(np.float64).mean(axis=2)  # grey: mean of the colours
    if dtype.kind == "f" and not np.isfinite(arr).all():
        raise ImageError("the .npy array holds NaN or infinite values")
    if dtype.kind in "bf" or (arr.size and arr.min() >= 0 and arr.max() <= 1):
        return (arr > 0.5).astype(np.float32)  # bool, float, or integers that are 0 / 1
    return (arr > 127).astype(np.float32)  # 8-bit grey levels
