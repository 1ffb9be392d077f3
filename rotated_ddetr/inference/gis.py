"""GIS files of a scene's detections (a `SceneResult`'s pixel polygons, classes and scores -> one file; called by
`writers.write_scene_outputs`): GeoJSON in WGS84 longitude/latitude (RFC 7946; format "geojson"), GeoJSON in the
raster's own CRS (format "geojson-crs") and a GeoPackage layer in the raster's CRS (format "gpkg", through pyogrio).

A scene without a CRS is written in pixel coordinates (x right, y down, pixel (0, 0) = top-left corner) by all
three, and says so: "coordinates": "pixel" in GeoJSON, no CRS and layer metadata coordinates=pixel in the GeoPackage.
Exterior rings are closed and counter-clockwise in the file's coordinates (RFC 7946 section 3.1.6, right-hand
rule): in lon/lat (north up) a ring turns counter-clockwise on the map, and so on the screen over a north-up scene.
"""

from __future__ import annotations

import io
import json
import math
import os
import warnings

import numpy as np
import shapely
from rasterio import warp

from rotated_ddetr.data.dota import SceneResult
from rotated_ddetr.fileio import atomic_write_bytes, atomic_write_text
from rotated_ddetr.inference.scenes import SceneError

WGS84 = "EPSG:4326"  # rasterio's warp functions take and give it in GIS order: (longitude, latitude)
GPKG_FIELDS = ("class", "score", "scene")
GPKG_MISSING = "the gpkg format needs pyogrio, which is not installed: pip install pyogrio (or rotated_ddetr[geo])"


def _ring(points: np.ndarray) -> list[list[float]]:
    """A closed ring, counter-clockwise in its own axes (the shoelace area is positive), from (n, 2) points."""
    x, y = points[:, 0], points[:, 1]
    if np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) < 0:  # shoelace: negative = clockwise
        points = points[::-1]
    return [[float(px), float(py)] for px, py in (*points, points[0])]


def pixels_to_crs(pixels: np.ndarray, transform) -> np.ndarray:
    """(n, 2) scene pixels (x, y) -> (n, 2) CRS coordinates through the raster's `affine.Affine` transform."""
    a, b, c, d, e, f = transform[:6]
    return np.stack((a * pixels[:, 0] + b * pixels[:, 1] + c, d * pixels[:, 0] + e * pixels[:, 1] + f), axis=1)


def _decimals(step: float) -> int:
    """Decimals that round coordinates to within 0.005 of `step`, the coordinate span of one pixel."""
    return max(0, math.ceil(-math.log10(step / 100))) if step > 0 else 9


def geojson_crs_collection(result: SceneResult, name: str, crs=None, transform=None) -> dict:
    """A GeoJSON FeatureCollection of a scene's boxes in the raster's own CRS (format "geojson-crs"), one Polygon
    feature each: GeoJSON of 2008 with a "crs" member, as GDAL writes it (RFC 7946 readers assume WGS84: use
    `geojson_collection` for them).

    Args:
        result: the scene's detections (pixel polygons).
        name: the scene's name (a top-level "name" member).
        crs: a `rasterio.crs.CRS`; with it, geometries are in its coordinates through `transform` and the CRS is
            recorded ("crs" member); without it, geometries are in pixel coordinates ("coordinates": "pixel").
        transform: the raster's `affine.Affine` pixel -> CRS transform (pixel (0, 0) = top-left pixel corner).
            CRS coordinates are rounded to about 0.01 pixel (the precision of the pixel polygons).

    Returns:
        The collection; properties per feature: "class", "score" and, when georeferenced, "pixel_polygon".
    """
    geographic = crs is not None and transform is not None
    if geographic:  # CRS coordinates to about 0.01 pixel, as the pixel polygons
        decimals = _decimals(max(math.hypot(transform.a, transform.d), math.hypot(transform.b, transform.e)))
    features = []
    for polygon, cls, score in zip(result.polygons, result.classes, result.scores.tolist(), strict=True):
        pixels = polygon.reshape(4, 2)
        properties: dict = {"class": cls, "score": score}
        points = pixels
        if geographic:
            points = np.round(pixels_to_crs(pixels, transform), decimals)
            properties["pixel_polygon"] = _ring(pixels)
        features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [_ring(points)]},
                         "properties": properties})  # fmt: skip
    collection: dict = {"type": "FeatureCollection", "name": name, "coordinates": "crs" if geographic else "pixel"}
    if geographic:
        epsg = crs.to_epsg()
        crs_name = f"urn:ogc:def:crs:EPSG::{epsg}" if epsg is not None else crs.to_wkt()
        collection["crs"] = {"type": "name", "properties": {"name": crs_name}}
    collection["features"] = features
    return collection


def _lonlat_step(crs, transform, point: np.ndarray) -> float:
    """Degrees spanned by one pixel at scene pixel `point` (x, y) in the direction where it spans fewest (the
    smallest singular value of the pixel -> lon/lat Jacobian: a lon/lat rounding error e is at most |e| / that
    many pixels)."""
    pixels = point + np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    lon, lat = warp.transform(crs, WGS84, *pixels_to_crs(pixels, transform).T)
    jacobian = np.array([[lon[1] - lon[0], lon[2] - lon[0]], [lat[1] - lat[0], lat[2] - lat[0]]])
    return float(np.linalg.svd(jacobian, compute_uv=False).min())


def _rfc7946_geometry(geometry: dict, decimals: int) -> dict:
    """`transform_geom`'s Polygon (or MultiPolygon, for a box cut at the antimeridian, RFC 7946 section 3.1.9)
    with its coordinates rounded and each exterior ring closed and counter-clockwise."""
    polygons = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
    rings = [[_ring(np.round(np.asarray(polygon[0], float)[:-1], decimals))] for polygon in polygons]
    if len(rings) == 1:
        return {"type": "Polygon", "coordinates": rings[0]}
    return {"type": "MultiPolygon", "coordinates": rings}


def geojson_collection(result: SceneResult, name: str, crs=None, transform=None) -> dict:
    """An RFC 7946 GeoJSON FeatureCollection of a scene's boxes (format "geojson"): one Polygon feature each, in
    WGS84 longitude/latitude reprojected from the raster's CRS by `rasterio.warp.transform_geom` (corners only: a
    box of a few hundred metres bends by far less than a pixel), no "crs" member.

    Args:
        result: the scene's detections (pixel polygons).
        name: the scene's name (a top-level "name" member).
        crs: the raster's `rasterio.crs.CRS`; without it (or `transform`), the collection is in pixel coordinates,
            as `geojson_crs_collection` writes them ("coordinates": "pixel").
        transform: the raster's `affine.Affine` pixel -> CRS transform.

    Returns:
        The collection, "coordinates": "lonlat" when georeferenced; properties per feature: "class", "score" and,
        when georeferenced, "pixel_polygon". Degrees are rounded to about 0.001 pixel at the detections' centre.

    Raises:
        SceneError: the CRS has no transformation to WGS84 (a local engineering CRS, say); names the scene.
    """
    if crs is None or transform is None:
        return geojson_crs_collection(result, name)
    pixels = result.polygons.reshape(-1, 4, 2)
    polygons = [{"type": "Polygon", "coordinates": [_ring(pixels_to_crs(p, transform))]} for p in pixels]
    try:
        geometries = warp.transform_geom(crs, WGS84, polygons) if polygons else []
        centre = pixels.reshape(-1, 2).mean(axis=0) if len(pixels) else np.zeros(2)
        decimals = _decimals(_lonlat_step(crs, transform, centre) / 10)  # one digit more: the step varies
    except Exception as error:  # GDAL raises its CPLE_* errors (private classes) for a CRS it cannot transform
        raise SceneError(f"{name}: cannot reproject {crs} to WGS84 longitude/latitude ({error}); the geojson-crs "
                         "format writes the raster's own CRS") from None  # fmt: skip
    features = [
        {"type": "Feature", "geometry": _rfc7946_geometry(geometry, decimals),
         "properties": {"class": cls, "score": score, "pixel_polygon": _ring(p)}}
        for geometry, p, cls, score in zip(geometries, pixels, result.classes, result.scores.tolist(), strict=True)
    ]  # fmt: skip
    return {"type": "FeatureCollection", "name": name, "coordinates": "lonlat", "features": features}


def write_geojson(path: str | os.PathLike, result: SceneResult, name: str, crs=None, transform=None) -> None:
    """Writes `geojson_collection(result, name, crs, transform)` (RFC 7946) to `path` as compact JSON."""
    atomic_write_text(path, json.dumps(geojson_collection(result, name, crs, transform)) + "\n")


def write_geojson_crs(path: str | os.PathLike, result: SceneResult, name: str, crs=None, transform=None) -> None:
    """Writes `geojson_crs_collection(result, name, crs, transform)` (the raster's CRS) to `path` as compact JSON."""
    atomic_write_text(path, json.dumps(geojson_crs_collection(result, name, crs, transform)) + "\n")


def check_gpkg_support() -> None:
    """Raises ImportError (`GPKG_MISSING`: one line saying what to install) when pyogrio is not installed."""
    try:
        import pyogrio.raw  # noqa: F401
    except ImportError:
        raise ImportError(GPKG_MISSING) from None


def write_gpkg(path: str | os.PathLike, result: SceneResult, name: str, crs=None, transform=None) -> None:
    """Writes a GeoPackage at `path` with one layer, `name`: a Polygon per box and the fields class (string),
    score (real) and scene (string, `name`), in the order of `result`.

    Geometries are in the raster's CRS (through `transform`, not rounded) and the layer carries that CRS; without a
    CRS, pixel coordinates and no CRS (layer metadata coordinates=pixel). Built in memory by pyogrio's raw writer
    (WKB from shapely; no geopandas), then written atomically, like every file of the package.

    Raises:
        ImportError: pyogrio is not installed (`GPKG_MISSING`).
    """
    check_gpkg_support()
    import pyogrio.raw

    georeferenced = crs is not None and transform is not None
    pixels = result.polygons.reshape(-1, 4, 2)
    rings = np.array([_ring(pixels_to_crs(p, transform) if georeferenced else p) for p in pixels], float)
    geometry = shapely.to_wkb(shapely.polygons(rings.reshape(-1, 5, 2)))
    fields = [np.array(result.classes, dtype=object), np.asarray(result.scores, np.float64),
              np.full(len(pixels), name, dtype=object)]  # fmt: skip
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="'crs' was not provided")  # pixel coordinates: no CRS, on purpose
        pyogrio.raw.write(buffer, geometry, fields, list(GPKG_FIELDS), layer=name, driver="GPKG",
                          geometry_type="Polygon", crs=crs.to_wkt() if georeferenced else None,
                          layer_metadata={"coordinates": "crs" if georeferenced else "pixel"})  # fmt: skip
    atomic_write_bytes(path, buffer.getvalue())
