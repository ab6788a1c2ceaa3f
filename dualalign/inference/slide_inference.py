"""Detection over a whole slide: tile a level, skip glass, predict in batches, merge.

Steps of ``detect_slide``:

1. ``select_tiles``: overlapping tiles over the chosen level (``tile_grid``), a tissue mask on
   a thumbnail (``tissue_mask``), and the tiles with enough tissue.
2. ``iter_tile_predictions``: read those tiles (``reader.read_region``; the next batch is read
   in a background thread while the current one is predicted) and run the predictor.
3. Map tile boxes to level-0 pixels (``offset_boxes``), clipped to their tile.
4. Drop the truncated box of a cell cut by a tile's inner edge when a neighbouring tile saw the
   same cell whole (``wsi.merge.drop_covered_truncated``), then class-wise NMS over the slide
   (``wsi.merge.tiled_nms``: the result of ``merge_detections``, computed tile pair by tile
   pair so that it scales to whole slides).

Step 4's first half keeps the full box of a border cell even when the cut part is so small
that its IoU with the full box is below the NMS threshold; a cell larger than the overlap,
which no tile sees whole, keeps all its partial boxes for the NMS.
"""

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterator, NamedTuple, Optional, Tuple

import numpy as np
from tqdm import tqdm

from ..wsi.merge import (
    drop_covered_truncated,
    offset_boxes,
    overlapping_pairs,
    tiled_nms,
    touches_inner_edge,
)
from ..wsi.reader import SlideReader
from ..wsi.tiling import tile_grid, tile_origins_level0
from ..wsi.tissue import tile_tissue_fraction, tissue_mask

__all__ = [
    "TileSelection",
    "detect_slide",
    "instances_to_arrays",
    "iter_tile_predictions",
    "select_tiles",
    "thumbnail_size_for",
]

_MIN_THUMBNAIL, _MAX_THUMBNAIL = 1024, 4096  # tissue-mask thumbnail's longer side, pixels
_MASK_PIXELS_PER_TILE = 16  # the thumbnail resolves a tile's side in at least this many pixels


class TileSelection(NamedTuple):
    """Tiles of one slide level and which of them hold tissue.

    Attributes:
        tiles (np.ndarray[T, 4] int64): ``(x0, y0, x1, y1)`` in the level's pixels.
        origins (np.ndarray[T, 2] int64): each tile's ``(x0, y0)`` in level-0 pixels.
        tissue_fraction (np.ndarray[T] float64): tissue fraction of each tile (1 without mask).
        selected (np.ndarray[K] int64): indices of the tiles to run, increasing.
        tissue_threshold (float or None): signal threshold of the mask (None without mask).
    """

    tiles: np.ndarray
    origins: np.ndarray
    tissue_fraction: np.ndarray
    selected: np.ndarray
    tissue_threshold: Optional[float]


def thumbnail_size_for(reader: SlideReader, level: int, tile_size: int) -> int:
    """Longer side of the tissue-mask thumbnail: a tile spans >= 16 mask pixels if it can.

    Clamped to [1024, 4096] pixels (4096 is about 6 microns per pixel for a 100k-pixel slide at
    0.25 microns per pixel, inside ``tissue_mask``'s 4-16 range) and to the slide's size.
    """
    w0, h0 = reader.level_dimensions[0]
    tile_level0 = tile_size * reader.level_downsamples[level]
    wanted = int(np.ceil(max(w0, h0) * _MASK_PIXELS_PER_TILE / tile_level0))
    return int(min(max(w0, h0), max(_MIN_THUMBNAIL, min(_MAX_THUMBNAIL, wanted))))


def select_tiles(
    reader: SlideReader,
    level: int,
    tile_size: int,
    overlap: int,
    tissue_threshold: Optional[float] = None,
    min_tissue: float = 0.05,
    thumbnail_size: Optional[int] = None,
) -> TileSelection:
    """Overlapping tiles over a level and the ones with at least ``min_tissue`` tissue.

    Args:
        reader (SlideReader): the slide.
        level (int): pyramid level to tile.
        tile_size (int): tile side in pixels of ``level``.
        overlap (int): overlap of neighbouring tiles in pixels of ``level``.
        tissue_threshold (float or None): fixed stain-signal threshold for ``tissue_mask``;
            None uses Otsu's.
        min_tissue (float): keep tiles whose tissue fraction is at least this; <= 0 keeps
            every tile and skips the mask.
        thumbnail_size (int or None): longer side of the mask's thumbnail in pixels; None
            picks one with ``thumbnail_size_for``.

    Returns:
        TileSelection.
    """
    if not 0 <= level < reader.level_count:
        raise ValueError(
            f"{reader.path}: level {level} does not exist; the slide has {reader.level_count} "
            f"level(s) (0..{reader.level_count - 1})"
        )
    width, height = reader.level_dimensions[level]
    tiles = tile_grid(width, height, tile_size, overlap)
    origins = tile_origins_level0(tiles, reader.level_downsamples[level])
    if min_tissue <= 0:
        every = np.arange(len(tiles), dtype=np.int64)
        return TileSelection(tiles, origins, np.ones(len(tiles)), every, None)
    thumb = reader.thumbnail(thumbnail_size or thumbnail_size_for(reader, level, tile_size))
    mask, threshold = tissue_mask(thumb, threshold=tissue_threshold)
    fraction = tile_tissue_fraction(mask, tiles, (mask.shape[1] / width, mask.shape[0] / height))
    selected = np.flatnonzero(fraction >= min_tissue).astype(np.int64)
    return TileSelection(tiles, origins, fraction, selected, threshold)


def instances_to_arrays(instances) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """detectron2 ``Instances`` -> ``(boxes [N, 4] float64 XYXY, scores [N] float32,
    classes [N] int64)`` numpy arrays."""
    boxes = instances.pred_boxes.tensor.detach().cpu().numpy().astype(np.float64)
    scores = instances.scores.detach().cpu().numpy().astype(np.float32)
    classes = instances.pred_classes.detach().cpu().numpy().astype(np.int64)
    return boxes.reshape(-1, 4), scores.reshape(-1), classes.reshape(-1)


def iter_tile_predictions(
    predictor,
    reader: SlideReader,
    level: int,
    selection: TileSelection,
    batch_size: int = 4,
    progress: bool = True,
    desc: Optional[str] = None,
) -> Iterator[Tuple[int, np.ndarray, object]]:
    """Read the selected tiles and predict them, batch by batch.

    Args:
        predictor: has ``predict(list of RGB uint8 arrays) -> list of Instances`` (e.g.
            ``BatchPredictor``).
        reader (SlideReader): the slide.
        level (int): level the tiles are laid out on.
        selection (TileSelection): from ``select_tiles``.
        batch_size (int): tiles per ``predict`` call.
        progress (bool): show a tqdm bar (stderr).
        desc (str or None): the bar's label; default the slide's file name.

    Yields:
        tuple: ``(tile index, tile RGB array [S, S, 3] uint8, Instances in tile pixels)``, in
        the order of ``selection.selected``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    selected = selection.selected
    batches = [selected[i : i + batch_size] for i in range(0, len(selected), batch_size)]

    def read(batch):
        out = []
        for idx in batch:
            x0, y0, x1, y1 = (int(v) for v in selection.tiles[idx])
            ox, oy = (int(v) for v in selection.origins[idx])
            out.append(reader.read_region(ox, oy, level, x1 - x0, y1 - y0))
        return out

    bar = tqdm(
        total=len(selected),
        desc=desc or os.path.basename(reader.path),
        unit="tile",
        disable=not progress,
        leave=False,
        dynamic_ncols=True,
    )
    with bar, ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(read, batches[0]) if batches else None
        for k, batch in enumerate(batches):
            images = pending.result()
            if k + 1 < len(batches):  # read ahead while the model works
                pending = pool.submit(read, batches[k + 1])
            predictions = predictor.predict(images)
            if len(predictions) != len(images):
                raise RuntimeError(
                    f"predictor returned {len(predictions)} results for {len(images)} tiles"
                )
            for idx, image, instances in zip(batch, images, predictions):
                yield int(idx), image, instances
            bar.update(len(batch))


def detect_slide(
    predictor,
    reader: SlideReader,
    level: int = 0,
    tile_size: int = 256,
    overlap: int = 64,
    tissue_threshold: Optional[float] = None,
    min_tissue: float = 0.05,
    batch_size: int = 4,
    progress: bool = True,
    score_thresh: float = 0.0,
    nms_thresh: float = 0.5,
    min_coverage: float = 0.7,
    thumbnail_size: Optional[int] = None,
    desc: Optional[str] = None,
) -> Dict[str, object]:
    """Detect cells over a whole slide (see the module docstring for the steps).

    Args:
        predictor: has ``predict(list of RGB uint8 arrays) -> list of Instances``.
        reader (SlideReader): the slide (``open_slide``); plain images work too (one level).
        level (int): pyramid level to run the detector on.
        tile_size (int): tile side in pixels of ``level`` (the predictor resizes each tile to
            its test size, so ``INPUT.MIN_SIZE_TEST`` avoids a resize).
        overlap (int): tile overlap in pixels of ``level``; at least the largest cell.
        tissue_threshold (float or None): see ``select_tiles``.
        min_tissue (float): see ``select_tiles``; <= 0 runs every tile.
        batch_size (int): tiles per ``predict`` call.
        progress (bool): show a tqdm bar over tiles.
        score_thresh (float): detections scoring lower are dropped before the merge (a
            lower box never suppresses a higher one, so the output is the same as filtering
            after, only faster).
        nms_thresh (float): IoU above which boxes of one class are duplicates.
        min_coverage (float): see ``wsi.merge.covered_by_complete``.
        thumbnail_size (int or None): see ``select_tiles``.
        desc (str or None): progress bar label.

    Returns:
        dict: ``boxes`` (np.ndarray[N, 4] float64, level-0 XYXY, clipped to the slide),
        ``scores`` (np.ndarray[N] float32, decreasing), ``classes`` (np.ndarray[N] int64);
        per-tile information ``tiles`` ([T, 4] level pixels), ``tile_origins`` ([T, 2]
        level-0 pixels), ``tissue_fraction`` ([T]), ``selected`` ([K] indices of the tiles
        run), ``tile_num_detections`` ([K] detections >= ``score_thresh`` of each tile run,
        before the merge); and ``level``,
        ``downsample``, ``tile_size``, ``overlap``, ``tissue_threshold``, ``slide_size``
        (level-0 ``(width, height)``).
    """
    selection = select_tiles(
        reader, level, tile_size, overlap, tissue_threshold, min_tissue, thumbnail_size
    )
    downsample = reader.level_downsamples[level]
    width, height = reader.level_dimensions[level]
    w0, h0 = reader.level_dimensions[0]
    ids, boxes, scores, classes, truncated = [], [], [], [], []
    for idx, _, instances in iter_tile_predictions(
        predictor, reader, level, selection, batch_size, progress, desc
    ):
        b, s, c = instances_to_arrays(instances)
        hit = s >= score_thresh
        b, s, c = b[hit], s[hit], c[hit]
        truncated.append(touches_inner_edge(b, selection.tiles[idx], width, height))
        ox, oy = selection.origins[idx]
        ids.append(idx)
        boxes.append(offset_boxes(b, ox, oy, downsample))
        scores.append(s)
        classes.append(c)
    # Each tile's region in level-0 pixels, cut to the slide; boxes are clipped to it, which
    # the merge relies on (a box never leaves its tile).
    regions = np.zeros((len(ids), 4))
    if ids:
        regions[:, :2] = selection.origins[ids]
        regions[:, 2:] = regions[:, :2] + tile_size * downsample
        regions[:, 0::2] = regions[:, 0::2].clip(0, w0)
        regions[:, 1::2] = regions[:, 1::2].clip(0, h0)
    for k, region in enumerate(regions):
        boxes[k][:, 0::2] = boxes[k][:, 0::2].clip(region[0], region[2])
        boxes[k][:, 1::2] = boxes[k][:, 1::2].clip(region[1], region[3])
    pairs = overlapping_pairs(regions)
    keep = drop_covered_truncated(boxes, classes, truncated, regions, pairs, min_coverage)
    boxes, scores, classes = ([x[m] for x, m in zip(xs, keep)] for xs in (boxes, scores, classes))
    keep = tiled_nms(boxes, scores, classes, regions, pairs, nms_thresh)
    if ids:
        boxes = np.concatenate([x[m] for x, m in zip(boxes, keep)])
        scores = np.concatenate([x[m] for x, m in zip(scores, keep)])
        classes = np.concatenate([x[m] for x, m in zip(classes, keep)])
    else:
        boxes, scores, classes = np.zeros((0, 4)), np.zeros(0, np.float32), np.zeros(0, np.int64)
    order = np.argsort(-scores, kind="stable")
    return {
        "boxes": boxes[order].reshape(-1, 4),
        "scores": scores[order],
        "classes": classes[order],
        "tiles": selection.tiles,
        "tile_origins": selection.origins,
        "tissue_fraction": selection.tissue_fraction,
        "selected": selection.selected,
        "tile_num_detections": np.array([len(t) for t in truncated], dtype=np.int64),
        "level": int(level),
        "downsample": float(downsample),
        "tile_size": int(tile_size),
        "overlap": int(overlap),
        "tissue_threshold": selection.tissue_threshold,
        "slide_size": (int(w0), int(h0)),
    }
