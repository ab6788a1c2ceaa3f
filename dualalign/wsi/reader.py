"""One read interface for whole-slide images and plain large images.

``open_slide`` returns a ``SlideReader`` backed by OpenSlide when OpenSlide recognises the file
(.svs, .ndpi, .mrxs, tiled pyramidal TIFF, ...), else by an in-memory array with a single level
(PNG, JPEG, BMP via OpenCV; TIFFs that OpenSlide rejects via tifffile). Both backends return the
same thing: ``uint8`` RGB with alpha composited on white, and white beyond the slide's edge.
"""

import math
import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import openslide
import tifffile

_TIFF_SUFFIXES = (".tif", ".tiff")
_MAX_BAND_PIXELS = 1 << 26  # thumbnail reads at most this many level pixels at once (256 MiB)


class SlideReadError(IOError):
    """A file that cannot be opened or read as a slide; the message names the path."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: cannot read as a slide ({reason})")
        self.path = path
        self.reason = reason


class SlideReader:
    """Read access to a slide pyramid; use ``open_slide`` to get one.

    Attributes:
        path (str): the file.
        backend (str): ``"openslide"`` or ``"array"``.
        vendor (str or None): OpenSlide's format name (e.g. ``"aperio"``, ``"generic-tiff"``).
        level_count (int): number of pyramid levels (1 for the array backend).
        level_dimensions (list[tuple[int, int]]): ``(width, height)`` of each level.
        level_downsamples (list[float]): level-0 pixels per level pixel, level 0 first.
        mpp (float or None): microns per pixel at level 0 (x axis), when the file says.
        properties (dict[str, str]): raw metadata (OpenSlide's properties; empty for arrays).
    """

    backend = "base"

    def __init__(
        self,
        path: str,
        level_dimensions: Sequence[Tuple[int, int]],
        level_downsamples: Sequence[float],
        mpp: Optional[float],
        vendor: Optional[str] = None,
        properties: Optional[Dict[str, str]] = None,
    ):
        self.path = path
        self.level_dimensions: List[Tuple[int, int]] = [
            (int(w), int(h)) for w, h in level_dimensions
        ]
        self.level_downsamples: List[float] = [float(d) for d in level_downsamples]
        self.level_count = len(self.level_dimensions)
        self.mpp = mpp
        self.vendor = vendor
        self.properties = dict(properties or {})

    def read_region(self, x0: int, y0: int, level: int, width: int, height: int) -> np.ndarray:
        """Read a ``width`` x ``height`` region of a level.

        Args:
            x0 (int): left edge in LEVEL-0 pixels (as in OpenSlide), may be negative.
            y0 (int): top edge in level-0 pixels, may be negative.
            level (int): pyramid level to read from.
            width (int): region width in pixels of ``level``.
            height (int): region height in pixels of ``level``.

        Returns:
            np.ndarray[height, width, 3] uint8: RGB; transparent pixels and pixels outside
            the slide are white.
        """
        if not 0 <= level < self.level_count:
            raise ValueError(f"{self.path}: level {level} out of range [0, {self.level_count})")
        if width < 1 or height < 1:
            raise ValueError(f"{self.path}: region size must be positive, got {width}x{height}")
        return self._read(int(x0), int(y0), level, int(width), int(height))

    def thumbnail(self, max_size: Union[int, Tuple[int, int]]) -> np.ndarray:
        """Whole slide shrunk to fit ``max_size``, aspect ratio kept, never enlarged.

        Reads the smallest level that is still at least as large as the result, band by band,
        so a slide without small levels does not have to fit in memory.

        Args:
            max_size (int or (int, int)): largest side, or largest ``(width, height)``.

        Returns:
            np.ndarray[h, w, 3] uint8 RGB, with ``w / level0_width ~= h / level0_height``.
        """
        max_w, max_h = (max_size, max_size) if np.isscalar(max_size) else max_size
        w0, h0 = self.level_dimensions[0]
        scale = min(1.0, max_w / w0, max_h / h0)
        out_w, out_h = max(1, round(w0 * scale)), max(1, round(h0 * scale))
        level = best_level_for_downsample(self.level_downsamples, 1.0 / scale)
        lw, lh = self.level_dimensions[level]
        ds = self.level_downsamples[level]
        rows_per_band = max(1, int(_MAX_BAND_PIXELS / lw * out_h / lh))
        bands = []
        for r0 in range(0, out_h, rows_per_band):
            r1 = min(out_h, r0 + rows_per_band)
            top, bottom = math.floor(r0 * lh / out_h), math.ceil(r1 * lh / out_h)
            band = self._read(0, round(top * ds), level, lw, bottom - top)
            bands.append(cv2.resize(band, (out_w, r1 - r0), interpolation=cv2.INTER_AREA))
        return np.concatenate(bands, axis=0)

    def close(self) -> None:
        """Release the file; the reader cannot be used afterwards."""

    def __enter__(self) -> "SlideReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(path={self.path!r}, backend={self.backend!r}, "
            f"levels={self.level_dimensions}, mpp={self.mpp})"
        )

    def _read(self, x0: int, y0: int, level: int, width: int, height: int) -> np.ndarray:
        raise NotImplementedError


class _OpenSlideReader(SlideReader):
    backend = "openslide"

    def __init__(self, path: str, vendor: str):
        try:
            self._slide = openslide.OpenSlide(path)
        except openslide.OpenSlideError as e:
            raise SlideReadError(path, f"OpenSlide ({vendor}): {e}") from e
        props = dict(self._slide.properties)
        mpp = props.get(openslide.PROPERTY_NAME_MPP_X)
        super().__init__(
            path,
            self._slide.level_dimensions,
            self._slide.level_downsamples,
            float(mpp) if mpp else None,
            vendor,
            props,
        )

    def _read(self, x0, y0, level, width, height):
        try:
            rgba = np.asarray(self._slide.read_region((x0, y0), level, (width, height)))
        except openslide.OpenSlideError as e:
            raise SlideReadError(self.path, f"OpenSlide read at ({x0}, {y0}) level {level}: {e}")
        return _composite_on_white(rgba)

    def close(self):
        self._slide.close()


class _ArrayReader(SlideReader):
    backend = "array"

    def __init__(self, path: str, image: np.ndarray, mpp: Optional[float]):
        self._image = image  # [H, W, 3] uint8 RGB
        super().__init__(path, [(image.shape[1], image.shape[0])], [1.0], mpp)

    def _read(self, x0, y0, level, width, height):
        out = np.full((height, width, 3), 255, dtype=np.uint8)
        img_h, img_w = self._image.shape[:2]
        sx0, sy0 = max(x0, 0), max(y0, 0)
        sx1, sy1 = min(x0 + width, img_w), min(y0 + height, img_h)
        if sx1 > sx0 and sy1 > sy0:
            out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = self._image[sy0:sy1, sx0:sx1]
        return out

    def close(self):
        self._image = None


def open_slide(path: Union[str, os.PathLike]) -> SlideReader:
    """Open a whole-slide image, or a plain image as a one-level slide.

    Args:
        path (str): slide file.

    Returns:
        SlideReader: OpenSlide-backed when OpenSlide detects the format, else in memory.

    Raises:
        SlideReadError: the file is missing, or neither backend can decode it.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SlideReadError(path, "no such file")
    vendor = openslide.OpenSlide.detect_format(path)
    if vendor is not None:
        return _OpenSlideReader(path, vendor)
    if path.lower().endswith(_TIFF_SUFFIXES):
        image, mpp = _load_tiff(path)
    else:
        image, mpp = _load_with_opencv(path), None
    return _ArrayReader(path, image, mpp)


def best_level_for_downsample(
    level_downsamples: Sequence[float], downsample: float, tolerance: float = 0.01
) -> int:
    """Coarsest level whose downsample does not exceed the wanted one.

    Reading there and shrinking by the remaining factor never upsamples. A level within
    ``tolerance`` (relative) above the wanted downsample counts as equal, since pyramid
    downsamples are often slightly off (4.0003 for 4).

    Args:
        level_downsamples (list[float]): level-0 pixels per level pixel, increasing.
        downsample (float): wanted level-0 pixels per output pixel.
        tolerance (float): relative slack.

    Returns:
        int: level index (0 when every level is coarser than wanted).
    """
    fitting = [
        (ds, level)
        for level, ds in enumerate(level_downsamples)
        if ds <= downsample * (1.0 + tolerance)
    ]
    return max(fitting)[1] if fitting else 0


def level_for_magnification(
    reader: SlideReader, target_mpp: Optional[float] = None, downsample: Optional[float] = None
) -> int:
    """Level to read for a wanted resolution (give exactly one of the two).

    Args:
        reader (SlideReader): the slide.
        target_mpp (float): microns per pixel the model expects (e.g. the training data's);
            needs ``reader.mpp``.
        downsample (float): level-0 pixels per output pixel, when the slide has no MPP.

    Returns:
        int: the coarsest level at or finer than the target; the caller resizes by
        ``wanted_downsample / reader.level_downsamples[level]`` (>= 1 up to tolerance).

    Raises:
        ValueError: neither or both given, or ``target_mpp`` given and the slide has no MPP.
    """
    if (target_mpp is None) == (downsample is None):
        raise ValueError("give exactly one of target_mpp and downsample")
    if target_mpp is not None:
        if not reader.mpp:
            raise ValueError(
                f"{reader.path}: the slide has no microns-per-pixel metadata; "
                "pass downsample= instead of target_mpp="
            )
        downsample = target_mpp / reader.mpp
    return best_level_for_downsample(reader.level_downsamples, downsample)


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """RGBA [H, W, 4] uint8 (straight alpha) -> RGB [H, W, 3] uint8 over a white background."""
    alpha = rgba[..., 3:4]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgba[..., :3])
    a = alpha.astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * a + 255.0 * (1.0 - a)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _to_rgb8(image: np.ndarray, path: str, channels_last_bgr: bool) -> np.ndarray:
    """Grey / RGB(A) / BGR(A) array of uint8 or uint16 -> [H, W, 3] uint8 RGB on white."""
    if image.dtype == np.uint16:
        image = (image // 257).astype(np.uint8)
    elif image.dtype == np.bool_:
        image = image.astype(np.uint8) * 255
    elif image.dtype != np.uint8:
        raise SlideReadError(path, f"unsupported pixel type {image.dtype} (need 8 or 16 bits)")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise SlideReadError(path, f"unsupported image shape {image.shape}")
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    if channels_last_bgr:
        image = image[..., [2, 1, 0, 3][: image.shape[2]]]
    if image.shape[2] == 4:
        return _composite_on_white(image)
    return np.ascontiguousarray(image)


def _load_with_opencv(path: str) -> np.ndarray:
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise SlideReadError(path, "not a format OpenSlide or OpenCV can decode, or corrupt")
    return _to_rgb8(image, path, channels_last_bgr=True)


def _load_tiff(path: str) -> Tuple[np.ndarray, Optional[float]]:
    """Level 0 of a TIFF that OpenSlide rejects (e.g. strips, not tiles), and its MPP."""
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            image = series.asarray()
            axes = series.axes
            mpp = _tiff_mpp(tif.pages[0])
    except Exception as e:  # tifffile raises many types for corrupt files
        raise SlideReadError(path, f"tifffile: {type(e).__name__}: {e}") from e
    if "S" in axes and axes.index("S") < axes.index("Y"):
        image = np.moveaxis(image, axes.index("S"), -1)  # planar (separate) samples
    while image.ndim > 3 and image.shape[0] == 1:
        image = image[0]  # e.g. a single-frame "TYXS" series
    return _to_rgb8(image, path, channels_last_bgr=False), mpp


def _tiff_mpp(page) -> Optional[float]:
    """Microns per pixel from a TIFF page's XResolution / ResolutionUnit, when meaningful."""
    tag_x, tag_unit = page.tags.get("XResolution"), page.tags.get("ResolutionUnit")
    if tag_x is None or tag_unit is None:
        return None
    num, den = tag_x.value
    microns = {2: 25400.0, 3: 10000.0}.get(int(tag_unit.value))  # per inch, per centimetre
    if not microns or num <= 0 or den <= 0:
        return None
    return microns * den / num
