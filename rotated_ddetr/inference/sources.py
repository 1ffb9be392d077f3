"""Where scenes come from: a local path, an URL (http, https, s3, gs, az) or a GDAL virtual path (/vsicurl/, /vsis3/,
...) -> the scene's source, its name, the path GDAL opens and the GDAL settings of a remote read.

`scenes.list_scenes` and `scenes.open_scene` pass remote sources through untouched (no glob, no stat: they are not
local files); `scenes.RasterScene` reads them window by window over HTTP range requests (GDAL's /vsicurl/).
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

SceneSource = str | Path  # a local file as a Path; a remote or virtual raster as the string the user gave
# URL schemes read through GDAL's network file systems: http(s) by range requests, object stores by their APIs.
_VSI_PREFIX = {"http": "/vsicurl/", "https": "/vsicurl/", "s3": "/vsis3/", "gs": "/vsigs/", "az": "/vsiaz/"}
_VIRTUAL = re.compile(r"/vsi[a-z0-9_]+[/?]")  # a GDAL virtual file system path: /vsicurl/..., /vsis3/..., ...


def is_remote(item: str | os.PathLike) -> bool:
    """Whether `item` names a remote or virtual raster (an URL of a scheme in `_VSI_PREFIX`, or a GDAL /vsi path)
    rather than a local file."""
    if isinstance(item, Path):
        return False  # a Path has already collapsed an URL's '//'; URLs come as strings
    text = os.fspath(item)
    return bool(_VIRTUAL.match(text)) or urlsplit(text).scheme.lower() in _VSI_PREFIX


def scene_source(item: str | os.PathLike) -> SceneSource:
    """`item` as a scene source: the string itself when remote (`is_remote`), else a `Path`."""
    return os.fspath(item) if is_remote(item) else Path(item)


def scene_name(source: str | os.PathLike) -> str:
    """The scene's name, which its result files, tiles and Task1 lines carry: a local file's stem; for an URL or a
    virtual path, the stem of its last path component, query and fragment left out
    (`https://host/data/scene_1.tif?X-Amz-Signature=...` -> `scene_1`; an URL without a path: its host)."""
    if not is_remote(source):
        return Path(source).stem
    parts = urlsplit(os.fspath(source))
    components = [c for c in parts.path.split("/") if c]
    return PurePosixPath(components[-1]).stem if components else parts.netloc or os.fspath(source)


def gdal_path(source: SceneSource) -> SceneSource:
    """The path GDAL opens: a local `Path` as it is; `https://h/a.tif` -> `/vsicurl/https://h/a.tif`;
    `s3://bucket/key` -> `/vsis3/bucket/key` (gs://, az:// likewise); a /vsi path unchanged. Object-store
    credentials and endpoints come from GDAL's own settings (AWS_* environment variables, ~/.aws, ...)."""
    if not is_remote(source):
        return source
    text = os.fspath(source)
    if _VIRTUAL.match(text):
        return text
    scheme, _, rest = text.partition("://")
    prefix = _VSI_PREFIX[scheme.lower()]
    return prefix + (text if prefix == "/vsicurl/" else rest)


def remote_options(source: SceneSource) -> dict[str, str]:
    """GDAL settings for reading `source` (for a `rasterio.Env` around the open dataset; empty for local files).

    GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR: no directory listing and no probing for side-car files (.aux.xml, .ovr,
    .msk): one request for the header, then one per block range read (a user's own setting of it is kept).
    CPL_VSIL_CURL_NON_CACHED: GDAL forgets what it downloaded of the file when the reader closes it, so that a scene
    that changed on the server is read afresh (within a read, blocks are still cached).
    """
    if not is_remote(source):
        return {}
    return {
        "GDAL_DISABLE_READDIR_ON_OPEN": os.environ.get("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR"),
        "CPL_VSIL_CURL_NON_CACHED": os.fspath(gdal_path(source)),
    }
