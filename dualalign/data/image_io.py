"""Image reading that accepts every pixel format a Pap-smear export is likely to use.

``read_image`` always returns an 8-bit, 3-channel ``HxWx3`` array in detectron2's channel
convention (``cfg.INPUT.FORMAT``: "BGR" or "RGB"), whatever the file holds: 1-bit, 8-bit grey
(``L``), palette (``P``), grey + alpha, RGB, RGBA, 16-bit grey or RGB PNG/TIFF, float TIFF.

Decoders, tried in order until one succeeds:

1. ``.tif`` / ``.tiff``: ``tifffile`` first (grey or RGB pages, first page only). OpenCV 4.14
   returns scrambled pixels for a 16-bit planar ("separate") TIFF instead of failing.
2. ``cv2.imread(path, cv2.IMREAD_UNCHANGED)``: fast, keeps 16 bits, refuses truncated PNG /
   TIFF / BMP / WebP files. Skipped for JPEG: OpenCV silently fills the missing rows of a
   truncated JPEG with grey and would let a broken image into training.
3. Pillow (JPEG, and whatever the others refused), which raises on a truncated file.

Not done, on purpose:

- EXIF orientation is **not** applied (``IMREAD_UNCHANGED`` and ``Image.open`` both ignore
  it), so the array, ``read_image_size`` and the json's width/height all describe the stored
  pixel grid. Microscope and WSI exports carry no rotation tag.
- Alpha is **dropped**, not composited: a transparent pixel keeps its stored colour.
"""

import os

import cv2
import numpy as np
from PIL import Image

__all__ = ["ImageReadError", "read_image", "read_image_size"]

IMAGE_FORMATS = ("BGR", "RGB")
_JPEG_MAGIC = b"\xff\xd8\xff"
_TIFF_EXTS = (".tif", ".tiff")
_NOT_AN_IMAGE = "cannot decode: file is truncated or not an image"


class ImageReadError(IOError):
    """An image file that is missing, empty, truncated or not an image.

    ``str(err)`` is ``"<path>: <reason>"``; ``err.path`` and ``err.reason`` hold the parts.
    """

    def __init__(self, path, reason):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # keep both fields when sent back from a DataLoader worker
        return (type(self), (self.path, self.reason))


def read_image(path, format="BGR"):
    """Read any supported image file as an 8-bit, 3-channel array.

    Pixel values are mapped to 8 bits by the range of the stored dtype:

    - ``bool`` (1-bit): 0 / 255.
    - ``uint8``: unchanged.
    - ``uint16``: ``v >> 8`` (65535 -> 255, 256 -> 1), i.e. the full 16-bit range is kept
      linear; no per-image contrast stretch.
    - other integers (Pillow's 32-bit mode ``I`` holds 16-bit PNG/TIFF data): clipped to
      ``[0, 65535]``, then ``>> 8``.
    - floats: taken as ``[0, 1]`` intensities, clipped, times 255, rounded.

    Grey images are repeated to 3 channels; grey + alpha keeps the grey; alpha is dropped.

    Args:
        path (str): image file.
        format (str): channel order of the result, "BGR" (detectron2's default
            ``cfg.INPUT.FORMAT``) or "RGB".

    Returns:
        np.ndarray[H, W, 3] of uint8, C-contiguous.

    Raises:
        ImageReadError: the file is missing, empty, truncated or not a decodable image.
        ValueError: ``format`` is not "BGR" or "RGB".
    """
    if format not in IMAGE_FORMATS:
        raise ValueError(f"read_image: format must be one of {IMAGE_FORMATS}, got {format!r}")
    path = os.fspath(path)
    _check_file(path)
    array, order = _decode(path)
    array = _to_three_channels(_to_uint8(array, path), path)
    if order != format:
        array = array[:, :, ::-1]
    return np.ascontiguousarray(array)


def read_image_size(path):
    """Read an image's size from its header, without decoding the pixels.

    Uses Pillow's lazy ``Image.open``; for a TIFF that Pillow cannot parse, tifffile's page
    header. Only for a format neither understands is the image fully decoded.

    Args:
        path (str): image file.

    Returns:
        tuple[int, int]: ``(height, width)`` of the stored pixel grid (no EXIF rotation).

    Raises:
        ImageReadError: the file is missing, empty or not an image. A truncated file with an
            intact header is *not* detected here; use ``read_image`` for that.
    """
    path = os.fspath(path)
    _check_file(path)
    try:
        with Image.open(path) as im:
            width, height = im.size
        return int(height), int(width)
    except Exception as e:  # noqa: BLE001 - any Pillow failure means "try the next reader"
        pil_error = e
    if path.lower().endswith(_TIFF_EXTS):
        try:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                return int(page.imagelength), int(page.imagewidth)
        except Exception:  # noqa: BLE001
            pass
    try:
        return tuple(int(v) for v in read_image(path).shape[:2])
    except ImageReadError:
        raise ImageReadError(path, f"{_NOT_AN_IMAGE} ({_describe(pil_error)})") from None


def _check_file(path):
    if not os.path.exists(path):
        raise ImageReadError(path, "file not found")
    if os.path.isdir(path):
        raise ImageReadError(path, "is a directory, not an image file")
    if os.path.getsize(path) == 0:
        raise ImageReadError(path, "file is empty (0 bytes)")


def _decode(path):
    """Return ``(array, channel_order)`` from the first decoder that succeeds."""
    try:
        with open(path, "rb") as f:
            is_jpeg = f.read(3) == _JPEG_MAGIC
    except OSError as e:
        raise ImageReadError(path, f"cannot open: {e.strerror or e}") from None
    errors = []
    if path.lower().endswith(_TIFF_EXTS):
        try:
            return _decode_tifffile(path), "RGB"
        except Exception as e:  # noqa: BLE001 - e.g. a codec that needs imagecodecs
            errors.append(f"tifffile: {_describe(e)}")
    if not is_jpeg:
        array = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if array is not None and array.size > 0:
            return array, "BGR"
        errors.append("OpenCV could not decode it")
    try:
        return _decode_pillow(path), "RGB"
    except Exception as e:  # noqa: BLE001
        errors.append(f"Pillow: {_describe(e)}")
    raise ImageReadError(path, f"{_NOT_AN_IMAGE} ({'; '.join(errors)})")


def _decode_tifffile(path):
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        photometric = int(page.photometric)
        # MINISWHITE=0, MINISBLACK=1, RGB=2; palette, CMYK, YCbCr... are left to Pillow.
        if photometric not in (0, 1, 2):
            raise ValueError(f"photometric interpretation {photometric} not handled")
        array = page.asarray()
        if array.ndim == 3 and int(page.planarconfig) == 2:  # SEPARATE: samples first
            array = array.transpose(1, 2, 0)
        if photometric == 0:
            array = _invert(array)
    return array


def _decode_pillow(path):
    with Image.open(path) as im:
        im.load()  # raises OSError("image file is truncated") on a short file
        if im.mode == "1":
            im = im.convert("L")
        elif im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode in ("PA", "CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
        return np.array(im)


def _invert(array):
    if array.dtype == np.bool_:
        return ~array
    if array.dtype.kind == "f":
        return 1.0 - array
    return np.iinfo(array.dtype).max - array


def _to_uint8(array, path):
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16:
        return (array >> 8).astype(np.uint8)
    if array.dtype.kind in "iu":
        return (np.clip(array, 0, 65535) >> 8).astype(np.uint8)
    if array.dtype.kind == "f":
        return np.rint(np.clip(np.nan_to_num(array), 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ImageReadError(path, f"unsupported pixel type {array.dtype}")


def _to_three_channels(array, path):
    if array.ndim == 3 and array.shape[2] in (1, 2):
        array = array[:, :, 0]  # grey, or grey + alpha
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return array[:, :, :3]
    raise ImageReadError(path, f"unsupported image layout {array.shape}: expected HxW or HxWxC")


def _describe(error):
    return f"{type(error).__name__}: {error}"
