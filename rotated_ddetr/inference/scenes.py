"""Scenes for tiled inference: an array, an image file, a GeoTIFF/BigTIFF/VRT or a remote raster (an URL, see
`sources.py`) -> `SceneReader` -> window pixels.

A reader gives the scene's `image_size` (height, width), georeferencing (CRS and affine transform) and, on demand,
the (h, w, 3) uint8 RGB pixels of any window at any rate (resampled here), or a downscaled overview. Rasters are read
window by window through rasterio (GDAL's block cache bounded), so memory does not grow with the scene; the windows
come from `rotated_ddetr.tiles`, and `tiling.py` reads them ahead in a background thread.
"""

from __future__ import annotations

import contextlib
import glob
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import rasterio
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from rotated_ddetr.images import ImageError, read_image
from rotated_ddetr.inference.sources import SceneSource, gdal_path, is_remote, remote_options, scene_name, scene_source
from rotated_ddetr.tiles import Tile, resized_size, source_window

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")  # read window by window through rasterio (GDAL)
OPENCV_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")  # decoded whole, once, by OpenCV


class SceneError(ImageError):
    """A scene that cannot be opened or read (missing, corrupt, truncated, unsupported); the message names it."""


class SceneReader:
    """A scene whose windows are read on demand. Subclasses implement `_read_source` and `overview`.

    Attributes:
        name: the scene's name (file or URL stem, `sources.scene_name`); tile and Task1 image names derive from it.
        image_size: (height, width) in pixels.
        crs: the `rasterio.crs.CRS` of a georeferenced raster, else None.
        transform: its `affine.Affine` pixel -> CRS transform (pixel (0, 0) is the top-left pixel's top-left corner,
            as in our rboxes), else None.
    """

    name: str
    image_size: tuple[int, int]
    crs = None
    transform = None

    def _read_source(self, x0: int, y0: int, x1: int, y1: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Scene pixels [y0:y1, x0:x1] -> ((h, w, 3) uint8 RGB with nodata set to 0, (h, w) bool valid or None)."""
        raise NotImplementedError

    def overview(self, max_side: int) -> np.ndarray:
        """The whole scene downscaled so that its longer side is at most `max_side`: (h, w, 3) uint8 RGB."""
        raise NotImplementedError

    def read(self, window: Tile | tuple[int, int, int, int], rate: float = 1.0) -> np.ndarray:
        """The pixels of a window of the scene resized by `rate`.

        Args:
            window: a `Tile`, or (left, up, width, height) in resized pixels (then `rate` applies).
            rate: scale factor of the resized scene (a `Tile` carries its own).

        Returns:
            (height, width, 3) uint8 RGB; nodata pixels are 0. At rate 1 exactly the scene's pixels.
        """
        if not isinstance(window, Tile):
            left, up, w, h = (int(v) for v in window)
            scaled_h, scaled_w = scaled = resized_size(self.image_size, float(rate))
            if w <= 0 or h <= 0 or left < 0 or up < 0 or left + w > scaled_w or up + h > scaled_h:
                raise ValueError(f"window {window} is not inside the {scaled_w} x {scaled_h} scene at rate {rate}")
            window = Tile.at(rate, left, up, (h, w), scaled)
        pixels = self.read_tile(window, skip_nodata=False)
        assert pixels is not None  # only nodata skipping gives None
        return pixels

    def read_tile(self, tile: Tile, skip_nodata: bool = True) -> np.ndarray | None:
        """A tile's (height, width, 3) uint8 RGB pixels; None when `skip_nodata` and its source has no valid pixel.

        Raises:
            SceneError: the window cannot be read (corrupt or truncated file); names the scene and the window.
        """
        x0, y0, x1, y1 = source_window(tile, self.image_size)
        pixels, valid = self._read_source(x0, y0, x1, y1)
        if skip_nodata and valid is not None and not valid.any():
            return None
        return resample(pixels, tile, x0, y0)

    def close(self) -> None:
        """Releases the file (nothing to do for in-memory scenes)."""

    def __enter__(self) -> SceneReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _overview_size(image_size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """(height, width) of a scene of `image_size` (height, width) shrunk to a longer side of at most `max_side`
    (never enlarged)."""
    return resized_size(image_size, min(1.0, max_side / max(image_size)))


def resample(pixels: np.ndarray, tile: Tile, x0: int, y0: int) -> np.ndarray:
    """The tile's (height, width, 3) pixels from its source window `pixels` (top-left at scene pixel (x0, y0)).

    Bicubic, as the split tool's `cv2.resize(fx=rate, fy=rate, INTER_CUBIC)` of the whole scene, border pixels
    replicated as cv2.resize does (within a few grey levels of it: OpenCV's fixed-point weights differ slightly).
    """
    if tile.rate == 1:
        return pixels
    r = tile.rate
    matrix = np.array([[1 / r, 0, (tile.left + 0.5) / r - 0.5 - x0], [0, 1 / r, (tile.up + 0.5) / r - 0.5 - y0]])
    flags = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(pixels, matrix, (tile.width, tile.height), flags=flags, borderMode=cv2.BORDER_REPLICATE)


class ArrayScene(SceneReader):
    """A scene already in memory: an (H, W, 3) uint8 array, channel order passed on unchanged (models take RGB).

    Args:
        image: the pixels (not copied; tiles at rate 1 are views of it).
        name: the scene's name.
    """

    def __init__(self, image: np.ndarray, name: str = "scene") -> None:
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            shape = getattr(image, "shape", None)
            raise SceneError(f"scene arrays must be (H, W, 3) uint8, got {type(image).__name__} {shape}")
        self.image, self.name = image, name
        self.image_size = (image.shape[0], image.shape[1])

    def _read_source(self, x0: int, y0: int, x1: int, y1: int) -> tuple[np.ndarray, None]:
        return self.image[y0:y1, x0:x1], None

    def overview(self, max_side: int) -> np.ndarray:
        height, width = size = _overview_size(self.image_size, max_side)
        if size == self.image_size:
            return self.image.copy()
        return cv2.resize(self.image, (width, height), interpolation=cv2.INTER_AREA)


class ImageFileScene(ArrayScene):
    """A PNG/JPG/BMP scene, decoded whole and once into RGB by `images.read_image` (checked by content: a PNG named
    .jpg is read as a PNG; truncated files are refused): 3 bytes per pixel stay in memory (use a tiled GeoTIFF for
    scenes that should not be held whole). OpenCV reduces 16-bit PNGs to 8 bits.

    Raises:
        SceneError: missing, unreadable, corrupt or truncated file.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        try:
            image = read_image(path)
        except ImageError as error:
            raise SceneError(str(error)) from None
        super().__init__(image, Path(path).stem)


class RasterScene(SceneReader):
    """A raster (GeoTIFF, BigTIFF, VRT, JP2, ...) read window by window through rasterio: a local file, or a remote
    or virtual one (`https://`, `s3://`, `/vsicurl/...`: `sources.py`), fetched block range by block range.

    Bands: `bands` (1-based), else the red/green/blue bands where the colour interpretation names them, else the
    first three; a single band is repeated as grey. Non-uint8 data (uint16, int16, float) is stretched linearly to
    0..255 between per-band `percentiles` of the valid pixels, estimated once from a decimated read of at most
    `stats_side` pixels a side (bounded memory). Pixels where every selected band equals the nodata value, or the
    alpha band (or internal mask) is 0, are invalid: set to 0 and, where a whole tile is invalid, skipped. GDAL's
    block cache is capped at `cache_mb` while the reader is open; remote reads use `sources.remote_options`.

    Attributes:
        path: the source: a `Path`, or the URL / virtual path as given (a string).

    Raises:
        SceneError: the file cannot be opened (missing, unreachable, corrupt) or `bands` do not exist.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        bands: Sequence[int] | None = None,
        percentiles: tuple[float, float] = (2.0, 98.0),
        cache_mb: int = 256,
        stats_side: int = 1024,
    ) -> None:
        self.path: SceneSource = scene_source(path)
        self.name = scene_name(self.path)
        self._stack = contextlib.ExitStack()
        try:
            self._stack.enter_context(rasterio.Env(GDAL_CACHEMAX=cache_mb * 2**20, **remote_options(self.path)))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self._ds = self._stack.enter_context(rasterio.open(gdal_path(self.path)))
            self._setup(bands)
            self._limits = None if self._ds.dtypes[0] == "uint8" else self._stretch_limits(percentiles, stats_side)
        except (RasterioError, ValueError, IndexError) as error:
            self._stack.close()
            raise SceneError(f"{self.path}: cannot open as a raster ({error})") from None

    def _setup(self, bands: Sequence[int] | None) -> None:
        ds = self._ds
        self.image_size = (ds.height, ds.width)
        interp = list(ds.colorinterp)
        rgb = [interp.index(c) + 1 for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue) if c in interp]
        default = tuple(rgb) if len(rgb) == 3 else (1, 2, 3) if ds.count >= 3 else (1, 1, 1)
        self.bands = tuple(int(b) for b in bands) if bands is not None else default
        self.bands = self.bands * 3 if len(self.bands) == 1 else self.bands
        if len(self.bands) != 3 or not all(1 <= b <= ds.count for b in self.bands):
            raise ValueError(f"bands {self.bands} must be 1 or 3 band numbers in 1..{ds.count}")
        if len(set(ds.dtypes)) != 1:
            raise ValueError(f"bands of different data types {set(ds.dtypes)} are not supported")
        self._indexes = sorted(set(self.bands))
        self._alpha = interp.index(ColorInterp.alpha) + 1 if ColorInterp.alpha in interp else None
        self._nodata = ds.nodata
        flags = ds.mask_flag_enums[self.bands[0] - 1]
        self._internal_mask = self._alpha is None and MaskFlags.per_dataset in flags and MaskFlags.alpha not in flags
        self.crs = ds.crs
        self.transform = ds.transform if ds.crs is not None else None

    def _read(self, window: Window | None, out_shape: tuple[int, int] | None, resampling: Resampling) -> tuple:
        """Selected bands (len(indexes), h, w) and the (h, w) valid mask (None when every pixel is valid)."""
        shape = {} if out_shape is None else {"out_shape": out_shape}
        bands_shape = {} if out_shape is None else {"out_shape": (len(self._indexes), *out_shape)}
        data = self._ds.read(self._indexes, window=window, resampling=resampling, **bands_shape)
        valid = None
        if self._nodata is not None:
            nodata = np.isnan(data) if np.isnan(self._nodata) else data == np.asarray(self._nodata).astype(data.dtype)
            valid = ~nodata.all(axis=0)
        if self._alpha is not None:
            alpha = self._ds.read(self._alpha, window=window, resampling=Resampling.nearest, **shape) > 0
            valid = alpha if valid is None else valid & alpha
        elif self._internal_mask:
            mask = self._ds.read_masks(self.bands[0], window=window, resampling=Resampling.nearest, **shape) > 0
            valid = mask if valid is None else valid & mask
        return data, valid

    def _stretch_limits(self, percentiles: tuple[float, float], stats_side: int) -> np.ndarray:
        """(len(indexes), 2) per-band (low, high) percentiles of the valid pixels of a decimated read."""
        data, valid = self._read(None, _overview_size(self.image_size, stats_side), Resampling.nearest)
        limits = np.zeros((len(self._indexes), 2))
        for i, band in enumerate(data):
            values = band[valid] if valid is not None else band.ravel()
            values = values[np.isfinite(values)] if values.dtype.kind == "f" else values
            if values.size:
                limits[i] = np.percentile(values, percentiles)
        limits[:, 1] = np.maximum(limits[:, 1], limits[:, 0] + 1e-6)
        return limits

    def _to_rgb(self, data: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
        """(len(indexes), h, w) raster values -> (h, w, 3) uint8 RGB (stretched; invalid pixels 0)."""
        if self._limits is not None:
            low, high = self._limits[:, :1, None], self._limits[:, 1:, None]
            scaled = (data.astype(np.float32) - low.astype(np.float32)) * (255 / (high - low)).astype(np.float32)
            data = np.clip(np.nan_to_num(scaled) + 0.5, 0, 255).astype(np.uint8)
        rgb = np.ascontiguousarray(np.stack([data[self._indexes.index(b)] for b in self.bands], axis=-1))
        if valid is not None:
            rgb[~valid] = 0
        return rgb

    def _read_source(self, x0: int, y0: int, x1: int, y1: int) -> tuple[np.ndarray, np.ndarray | None]:
        try:
            data, valid = self._read(Window(x0, y0, x1 - x0, y1 - y0), None, Resampling.nearest)
        except RasterioError as error:
            detail = error.__cause__ or error  # rasterio's message only points at GDAL's, chained as the cause
            raise SceneError(f"{self.path}: cannot read window x {x0}..{x1}, y {y0}..{y1} ({detail})") from None
        return self._to_rgb(data, valid), valid

    def overview(self, max_side: int) -> np.ndarray:
        """The scene downscaled by GDAL (averaging; from the file's overviews where it has them)."""
        try:
            data, valid = self._read(None, _overview_size(self.image_size, max_side), Resampling.average)
        except RasterioError as error:
            raise SceneError(f"{self.path}: cannot read an overview ({error.__cause__ or error})") from None
        return self._to_rgb(data, valid)

    def close(self) -> None:
        """Closes the dataset and restores GDAL's cache settings."""
        self._stack.close()


def open_scene(image: np.ndarray | str | os.PathLike | SceneReader, **raster_options) -> SceneReader:
    """A `SceneReader` for an (H, W, 3) uint8 array, an image path (by suffix), a remote or virtual raster (an URL
    string or GDAL /vsi path, `sources.is_remote`: always a `RasterScene`) or an already open reader.

    Args:
        image: the scene; a `SceneReader` is returned as it is.
        raster_options: `RasterScene` options for raster files (bands, percentiles, cache_mb, stats_side).

    Raises:
        SceneError: the file is missing, unreachable, corrupt, truncated or of an unknown suffix.
    """
    if isinstance(image, SceneReader):
        return image
    if isinstance(image, np.ndarray):
        return ArrayScene(image)
    if is_remote(image):
        return RasterScene(image, **raster_options)
    path = Path(image)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise SceneError(f"{path}: no such file")
    if suffix in RASTER_SUFFIXES:
        return RasterScene(path, **raster_options)
    if suffix in OPENCV_SUFFIXES:
        return ImageFileScene(path)
    raise SceneError(f"{path}: unknown image suffix {suffix!r} (expected one of {RASTER_SUFFIXES + OPENCV_SUFFIXES})")


def list_scenes(inputs: Sequence[str | os.PathLike]) -> list[SceneSource]:
    """The scenes named by files, folders (their images, not recursively), glob patterns and remote or virtual
    rasters (URL strings and /vsi paths, passed through as strings: no glob, no stat; opening tells whether they
    exist), in order.

    Raises:
        SceneError: a local input matches nothing, or two scenes share a name (`sources.scene_name`: their results
            would collide).
    """
    suffixes = RASTER_SUFFIXES + OPENCV_SUFFIXES
    paths: list[SceneSource] = []
    for source in inputs:
        item = os.fspath(source)
        if is_remote(source):
            found: list[SceneSource] = [item]
        elif Path(item).is_dir():
            found = sorted(p for p in Path(item).iterdir() if p.is_file() and p.suffix.lower() in suffixes)
        elif glob.has_magic(item):
            found = sorted(Path(p) for p in glob.glob(item) if os.path.isfile(p))
        else:
            found = [Path(item)] if Path(item).is_file() else []
        if not found:
            raise SceneError(f"{item}: no such file, or no scene files found there")
        paths += [p for p in found if p not in paths]
    stems = [scene_name(p) for p in paths]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise SceneError(f"several scenes share the names {clashes[:5]} (results are named by file or URL stem)")
    return paths
