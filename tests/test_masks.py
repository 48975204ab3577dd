import numpy as np
from pycocotools import mask as mask_utils

from pomona import masks as M
from pomona.instances import Instances
from tests.conftest import disc


def test_polygon_round_trip_single_part():
    m = disc(100, 120, 50, 40, 20)
    back = M.polygons_to_mask(M.mask_to_polygon(m), 100, 120)
    assert M.mask_iou(m[None], back[None])[0, 0] > 0.95


def test_multi_part_mask_is_one_bridged_polygon():
    # an apple split in two by a branch: two parts, one instance
    m = disc(100, 120, 40, 50, 25)
    m[:, 38:43] = False
    parts = M.mask_to_polygons(m)
    assert len(parts) == 2
    poly = M.join_polygons(parts)
    back = M.polygons_to_mask(poly, 100, 120)
    assert M.mask_iou(m[None], back[None])[0, 0] > 0.9
    # both halves present, the gap (a 5 px branch) stays mostly empty: only a zero-width bridge crosses it
    assert back[:, :38].any() and back[:, 43:].any()
    assert back[:, 39:42].sum() < 0.1 * m.sum()


def test_rle_round_trip_and_json_ready():
    m = disc(64, 80, 30, 30, 10)
    rle = M.mask_to_rle(m)
    assert isinstance(rle["counts"], str)
    assert (M.rle_to_mask(rle) == m).all()


def test_mask_iou_matches_pycocotools():
    rng = np.random.default_rng(0)
    a = np.stack([disc(60, 70, *rng.integers(10, 50, 2), int(rng.integers(5, 15))) for _ in range(4)])
    b = np.stack([disc(60, 70, *rng.integers(10, 50, 2), int(rng.integers(5, 15))) for _ in range(3)])
    ours = M.mask_iou(a, b)
    rle_a = [mask_utils.encode(np.asfortranarray(x.astype(np.uint8))) for x in a]
    rle_b = [mask_utils.encode(np.asfortranarray(x.astype(np.uint8))) for x in b]
    ref = mask_utils.iou(rle_a, rle_b, [0] * len(rle_b))
    assert np.allclose(ours, ref, atol=1e-6)


def test_mask_iou_hand_computed():
    a = np.zeros((1, 4, 4), bool)
    b = np.zeros((1, 4, 4), bool)
    a[0, :2, :] = True  # 8 px
    b[0, 1:3, :] = True  # 8 px, overlap 4
    assert np.isclose(M.mask_iou(a, b)[0, 0], 4 / 12)


def test_box_iou_hand_computed():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[5, 5, 15, 15]], np.float32)
    assert np.isclose(M.box_iou(a, b)[0, 0], 25 / 175)


def test_cleanup_fragments_holes_overlaps():
    big = disc(50, 50, 20, 25, 12)
    speck = np.zeros_like(big)
    speck[2:4, 45:47] = True
    holed = big.copy()
    holed[23:27, 18:22] = False
    assert not M.remove_small_fragments(big | speck, 10)[2:4, 45:47].any()
    assert M.fill_holes(holed)[25, 20]
    other = disc(50, 50, 30, 25, 12)
    resolved = M.resolve_overlaps(np.stack([big, other]), np.array([1, 0]))
    assert not (resolved[0] & resolved[1]).any()
    assert (resolved[1] == other).all()  # the first in order keeps all its pixels


def test_instances_cleanup_and_indexing():
    masks = np.stack([disc(40, 40, 10, 10, 6), disc(40, 40, 14, 10, 6), np.zeros((40, 40), bool)])
    inst = Instances.from_masks(masks, scores=np.array([0.9, 0.8, 0.7]))
    cleaned = inst.with_masks_cleaned(min_area=5)
    assert len(cleaned) == 2  # the empty one is gone
    assert not (cleaned.masks[0] & cleaned.masks[1]).any()
    assert len(inst[np.array([True, False, True])]) == 2
    assert inst[0].boxes.shape == (1, 4)
    recs = cleaned.to_records(with_polygons=True)
    assert recs[0]["area"] > 0 and len(recs[0]["polygon"]) >= 3


def test_empty_instances_derived_quantities():
    empty = Instances.empty((30, 40))
    assert empty.areas.shape == (0,) and empty.centroids.shape == (0, 2)
    assert empty.to_records(with_polygons=True) == [] and empty.polygons() == []
    assert len(empty.with_masks_cleaned(min_area=5)) == 0


def test_derived_quantities_match_full_frame_computation():
    """areas/centroids/polygons look only inside each box; they must equal the whole-frame answers."""
    masks = np.stack([disc(90, 120, 20, 30, 9), disc(90, 120, 80, 60, 25), disc(90, 120, 118, 5, 6)])
    masks[1, :, 78:81] = False  # a two-part apple
    inst = Instances.from_masks(masks)
    assert (inst.areas == masks.reshape(3, -1).sum(1)).all()
    for m, c, poly in zip(masks, inst.centroids, inst.polygons()):
        ys, xs = np.nonzero(m)
        assert np.allclose(c, (xs.mean(), ys.mean()))
        assert np.array_equal(poly, M.mask_to_polygon(m))


def test_polygons_through_one_mosaic_match_each_mask_alone():
    """Instances.polygons outlines every mask with one findContours over a mosaic of their windows
    (pomona/mosaic.py): overlapping apples, a two-part apple, a one-pixel mask, an empty mask and more apples
    than one mosaic holds (255) must all give what each mask alone gives."""
    rng = np.random.default_rng(3)
    h, w = 160, 200
    masks = [disc(h, w, int(rng.integers(10, w - 10)), int(rng.integers(10, h - 10)), int(rng.integers(3, 14)))
             for _ in range(300)]
    masks[1] = disc(h, w, 60, 60, 20) | disc(h, w, 75, 64, 18)  # overlaps masks[2]'s window
    masks[2] = disc(h, w, 70, 62, 16)
    masks[3][:, :] = False
    masks[3][40:70, 40:46] = True
    masks[3][40:70, 50:56] = True  # two parts
    masks[4] = np.zeros((h, w), bool)
    masks[4][5, 7] = True  # one pixel
    inst = Instances.from_masks(np.stack(masks))
    inst.masks[5] = False  # an instance whose mask came out empty
    polys = inst.polygons()
    assert len(polys) == len(masks)
    for m, poly in zip(inst.masks, polys):
        assert np.array_equal(poly, M.mask_to_polygon(m))
    assert len(polys[5]) == 0 and len(polys[3]) > 8
    records = inst.to_records(with_polygons=True)
    assert all(isinstance(v, int) for r in records for xy in r["polygon"] for v in xy)  # whole pixel numbers


def test_mosaic_boundary_is_its_contours_joined():
    """Mosaic.boundary (the picking step's outlines, no Python step per point) holds the points of contours(),
    each with its window, grouped by window (a window's contours in contours()' order, each in its own order):
    a two-part mask and touching windows included."""
    from pomona.mosaic import mosaics

    h, w = 120, 160
    masks = [disc(h, w, 40, 40, 15), disc(h, w, 60, 45, 12), disc(h, w, 120, 90, 20)]
    masks[2][60:75, 10:20] = True  # a second part far from the first: the window spans both
    for mosaic in mosaics(Instances.from_masks(np.stack(masks))):
        contours, window = mosaic.contours()
        points, k = mosaic.boundary()
        by_window = np.argsort(window, kind="stable")
        assert np.array_equal(points, np.concatenate([contours[i] for i in by_window]))
        assert np.array_equal(k, np.repeat(window[by_window], [len(contours[i]) for i in by_window]))
        assert (np.diff(k) >= 0).all()
        assert np.bincount(window).tolist() == [1, 1, 2]
