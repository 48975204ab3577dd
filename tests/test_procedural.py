"""Procedural orchard renderer: determinism, exact modal masks, prompt steering, families, drive-by."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pomona.pipeline.procedural import FAMILIES, parse_prompt, render, render_driveby
from pomona.pipeline.procedural import apples as apple_mod
from pomona.pipeline.procedural.canopy import draw_leaf, leaf_batch, leaf_code, leaf_colours, leaf_polygons, shade_leaves
from pomona.pipeline.procedural.params import sample_params
from pomona.pipeline.procedural.scene import instances_from_idbuf, scene_rng

SIZE = (192, 160)  # (width, height): small and non-square to catch axis mix-ups


@pytest.fixture(scope="module")
def scenes():
    prompts = ["red Fuji apples in a dense canopy, many apples in clusters, 1 m away", "apples", "bicolour Gala apples, sunny, 2 m away"]
    return [render(p, s, SIZE) for p in prompts for s in (1, 2)]


def test_shapes_dtypes_and_masks(scenes):
    labelled = 0
    for sc in scenes:
        assert sc.image.shape == (SIZE[1], SIZE[0], 3) and sc.image.dtype == np.uint8
        inst = sc.instances
        assert inst.image_size == (SIZE[1], SIZE[0])
        assert inst.masks.dtype == bool and inst.masks.shape == (len(inst), SIZE[1], SIZE[0])
        assert np.all(inst.scores == 1.0) and np.all(inst.class_ids == 0)
        if len(inst):
            assert inst.masks.sum(0).max() == 1, "apple masks overlap"
            assert inst.areas.min() >= 12, "tiny apples must be dropped"
        labelled += len(inst)
        json.dumps(sc.params)  # manifest-ready
    assert labelled > 0, "no apple labelled in six scenes"


def test_deterministic_and_seed_dependent():
    a = render("fuji apples, 1 m away", 7, (128, 128))
    b = render("fuji apples, 1 m away", 7, (128, 128))
    c = render("fuji apples, 1 m away", 8, (128, 128))
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.instances.masks, b.instances.masks)
    assert a.params == b.params
    assert not np.array_equal(a.image, c.image)


def test_masks_sit_on_apple_pixels():
    """Red apples on green foliage: the pixels under the masks are red, the rest of the image green."""
    reds = 0
    for seed in range(3):
        sc = render("red apples, 0.6 m away, sunny", seed, (160, 160), disable=frozenset({"blur", "lighting"}))
        if not len(sc.instances):
            continue
        on = sc.image[sc.instances.masks.any(0)].astype(float).mean(0)
        off = sc.image[~sc.instances.masks.any(0)].astype(float).mean(0)
        assert on[2] > on[1] and off[1] > off[2]  # BGR: red > green on apples, green > red elsewhere
        reds += 1
    assert reds > 0


def _blank_light():
    return dict(light="sunny", light_dir=[0.3, -0.5, 0.8], sun=0.8, ambient=0.4, light_bgr=[1.0, 1.0, 1.0])


def test_modal_masks_exclude_occluders():
    """An apple fully behind a leaf is not labelled; a partly covered one has a mask smaller than its disc."""
    rng = np.random.default_rng(0)
    prm = dict(disabled=["cultivar_colours"], colour_jitter=0.0, ground_bgr=[0.3, 0.7, 0.8], blush_bgr=[0.2, 0.2, 0.7], blush_coverage=0.5)
    canvas = np.zeros((120, 200, 3), np.uint8)
    idbuf = np.zeros((120, 200), np.int32)
    hidden = apple_mod.apple_spec(rng, prm, 50, 60, 12, 1.0)
    partial = apple_mod.apple_spec(rng, prm, 150, 60, 25, 1.0)
    apple_mod.draw_apple(canvas, idbuf, hidden, 1, _blank_light(), 1.0)
    apple_mod.draw_apple(canvas, idbuf, partial, 2, _blank_light(), 1.0)
    full_area = int((idbuf == 2).sum())
    # A big leaf over apple 1 and a leaf over half of apple 2.
    leaves = leaf_batch(rng, [50, 140], [60, 60], [120, 50], [0.0, 0.0], [0.5, 0.5])
    leaves["width_ratio"][:] = 0.6
    leaves["length"][:] = [120, 50]
    a, b, rib = leaf_polygons(leaves)
    cols = leaf_colours(leaves, _blank_light(), np.zeros(2, np.float32), np.ones(2, np.float32))
    for i in range(2):
        draw_leaf(canvas, idbuf, a[i], b[i], rib[i], cols[i], True)
    inst = instances_from_idbuf(idbuf, 2)
    assert inst.meta["apple_ids"] == [2]
    assert 12 <= inst.areas[0] < full_area
    assert full_area > 0.8 * math.pi * 25 * 25 * 0.84  # the unoccluded disc was really drawn


def test_prompt_keywords_steer_params():
    assert parse_prompt("green Granny Smith apples")["cultivar"] == "granny_smith"
    assert parse_prompt("red and yellow Honeycrisp apples at night lit by a camera flash")["light"] == "night_flash"
    assert parse_prompt("close-up 0.5 m away")["distance_m"] == 0.5
    assert parse_prompt("heavily occluded by leaves")["occlusion"] == "heavy"
    assert parse_prompt("apples cut by the image border")["border_cut"] is True
    assert parse_prompt("qwerty zebra") == {}
    rng = np.random.default_rng(0)
    prm = sample_params("green Granny Smith apples, backlit, 3 m away", rng, (320, 320), frozenset())
    assert prm["cultivar"] == "granny_smith" and prm["light"] == "backlit"
    assert 2.0 < prm["distance_m"] < 4.5
    sc = render("yellow Golden Delicious apples on a tree at dusk", 0, (96, 96))
    assert sc.params["cultivar"] == "golden" and sc.params["light"] == "dusk"


def test_unknown_prompt_gives_wide_distribution():
    cultivars = {sample_params("zebra", np.random.default_rng(s), (64, 64), frozenset())["cultivar"] for s in range(40)}
    lights = {sample_params("zebra", np.random.default_rng(s), (64, 64), frozenset())["light"] for s in range(40)}
    assert len(cultivars) >= 4 and len(lights) >= 4


def test_disable_switches_off_families():
    for s in range(10):
        prm = sample_params("apples", scene_rng("apples", s), (64, 64), frozenset(FAMILIES))
        assert prm["defocus_px"] == 0 and prm["motion_px"] == 0
        assert prm["cultivar"] == "fuji" and prm["light"] == "sunny" and prm["colour_jitter"] == 0
        assert prm["posts"] == prm["wires"] == prm["poles"] == 0 and not prm["net"]
        assert prm["banded_posts"] == prm["tapes"] == 0 and prm["band_chance"] == prm["dry_leaf_fraction"] == 0
        assert prm["occlusion"] == "none" and prm["front_leaf_fraction"] == 0
    blurry = [sample_params("apples", scene_rng("apples", s), (64, 64), frozenset())["motion_px"] for s in range(40)]
    assert max(blurry) > 0
    with pytest.raises(ValueError):
        render("apples", 0, (64, 64), disable=frozenset({"nonsense"}))


def test_density_counts_apples_in_view_whatever_their_distance():
    """A far view must not fill up with dozens of specks: density sets how many apples are in view,
    so far scenes don't swamp the training set with tiny instances."""
    for s in range(3):
        far = render("many apples, 3 m away", s, (640, 640)).params
        near = render("many apples, 0.6 m away", s, (320, 320)).params
        assert 16 <= far["apples_drawn"] <= 45 and near["apples_drawn"] <= 45
        assert render("few apples, 3 m away", s, (320, 320)).params["apples_drawn"] <= 6


def test_apples_are_occluded_by_their_own_spur_leaves_and_twigs():
    """Real occluders are leaves about as long as the fruit is wide and the twig it hangs from, which cut
    bites out of an apple; leaves much larger than the apple would hide half of it behind one shape."""
    stats = [render("heavily occluded apples, many apples", s, (320, 320)).params for s in range(4)]
    ratios = [p["front_leaf_to_apple"] for p in stats if p["front_leaves"]]
    assert ratios and max(ratios) <= 1.2
    assert sum(p["front_twigs"] for p in stats) > 0


def test_disable_occluders_leaves_apples_unoccluded():
    """Without occluders every apple is drawn on top of the foliage: masks are (almost) whole discs."""
    sc = render("fuji apples, few apples, 0.5 m away", 4, (160, 160), disable=frozenset({"occluders"}))
    assert sc.params["occlusion"] == "none"
    assert sc.params["apples_drawn"] >= len(sc.instances)


def test_driveby_writes_consistent_files(tmp_path):
    # Apples must be large enough to survive the 12-pixel visibility floor at this small test size.
    summary = render_driveby(tmp_path, frames=6, seed=1, size=(192, 128), prompt="many red apples, 1 m away")
    for name in ("driveby.mp4", "driveby_gt.jsonl", "driveby.json"):
        assert (tmp_path / name).is_file() and (tmp_path / name).stat().st_size > 0
    lines = [json.loads(x) for x in (tmp_path / "driveby_gt.jsonl").read_text().splitlines()]
    assert [x["frame"] for x in lines] == list(range(6))
    ids = {a["track_id"] for x in lines for a in x["apples"]}
    assert summary["distinct_apples"] == len(ids) > 0
    assert json.loads((tmp_path / "driveby.json").read_text()) == summary
    for x in lines:
        for a in x["apples"]:
            x0, y0, x1, y1 = a["box"]
            assert 0 <= x0 < x1 <= 192 and 0 <= y0 < y1 <= 128 and a["area"] >= 12
    # identity persists: some apple is seen in more than one frame
    per_id = {}
    for x in lines:
        for a in x["apples"]:
            per_id.setdefault(a["track_id"], []).append(x["frame"])
    assert max(len(v) for v in per_id.values()) > 1
    import cv2

    cap = cv2.VideoCapture(str(tmp_path / "driveby.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 6


def test_render_320_finishes():
    sc = render("apples", 11, (320, 320))
    assert sc.image.shape == (320, 320, 3)


def test_distractors_only_add_to_a_seeds_scene():
    """Painted posts, flagging tape and dry leaves draw from their own stream: switching them off gives the
    same scene (same apples, same count), and with them on each apple's label only loses what they cover."""
    import copy

    from pomona.pipeline.procedural.scene import build_world

    size, seen = (320, 256), 0
    for seed in range(12):
        rng = scene_rng("apples in an orchard with posts", seed)
        prm = sample_params("apples in an orchard with posts", rng, size, frozenset())
        prm.update(banded_posts=2, band_chance=1.0, tapes=3, dry_leaf_fraction=0.2)
        plain = dict(prm, banded_posts=0, band_chance=0.0, tapes=0, dry_leaf_fraction=0.0)
        with_them, without = build_world(copy.deepcopy(rng), prm, size), build_world(copy.deepcopy(rng), plain, size)
        assert with_them.stats["apples_drawn"] == without.stats["apples_drawn"]
        assert with_them.stats["clutter_drawn"] >= without.stats["clutter_drawn"] + 2
        a, b = with_them.idbuf > 0, without.idbuf > 0
        assert not (a & ~b).any(), "a distractor must never be labelled as apple"
        assert (with_them.idbuf[a] == without.idbuf[a]).all()
        seen += int(b.sum() > a.sum()) + int((with_them.image != without.image).any())
    assert seen > 12  # the distractors are drawn (images differ) and sometimes hide part of an apple


def test_fine_detail_sharpens_and_grains_surfaces_but_not_the_sky():
    """The camera's unsharp mask and the surface grain add high-frequency detail to what the camera sees,
    leave the sky's flat gradient alone, and switch off with the blur family."""
    import cv2

    from pomona.pipeline.procedural import camera

    prm = sample_params("apples", scene_rng("apples", 0), (96, 96), frozenset())
    identity = dict(dapple=0.0, target_luma=0.0, texture=0.0, exposure=1.0, wb_bgr=[1.0, 1.0, 1.0], vignette=0.0,
                    haze=0.0, saturation=1.0, gamma=1.0, defocus_px=0.0, motion_px=0.0, noise_sigma=0.0, jpeg_quality=0)
    image = np.full((96, 96, 3), 90, np.uint8)
    image[:, 48:] = 170  # one edge for the sharpening to find
    sky = np.zeros((96, 96), np.float32)
    sky[:, :24] = 1.0

    def energy(img, cols):
        grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
        return float(np.abs(cv2.Laplacian(grey, cv2.CV_32F))[:, cols].mean())

    rng = np.random.default_rng(0)
    plain = camera.finish(rng, image, sky, dict(prm, **identity, sharpen=0.0, grain=0.0))
    assert (plain == image).all()
    grained = camera.finish(rng, image, sky, dict(prm, **identity, sharpen=0.0, grain=0.1, grain_px=1.5))
    assert (grained[:, :24] == image[:, :24]).all(), "no grain on the sky"
    assert energy(grained, slice(26, 46)) > energy(plain, slice(26, 46)) + 1.0
    sharp = camera.finish(rng, image, sky, dict(prm, **identity, sharpen=1.5, sharpen_px=1.0, grain=0.0))
    assert energy(sharp, slice(44, 52)) > 1.5 * energy(plain, slice(44, 52))
    assert (sharp[:, :24] == image[:, :24]).all(), "nothing to sharpen on a flat sky"

    off = sample_params("apples", scene_rng("apples", 0), (96, 96), frozenset({"blur"}))
    assert off["sharpen"] == 0.0 and off["grain"] == 0.0


def test_leaf_shadows_only_darken_what_lies_behind():
    """With canopy shadows on, every pixel is as dark or darker than without, the sky is untouched,
    and the labels (id-buffer) are the same: a shadow is light taken away, never an object."""
    import copy

    from pomona.pipeline.procedural.scene import build_world

    size, shaded = (320, 256), 0
    for seed in range(6):
        rng = scene_rng("apples on a sunny day", seed)
        prm = sample_params("apples on a sunny day", rng, size, frozenset())
        prm["background_blur_px"] = 1.0  # no depth-of-field blur half way through, which would spread shade into the sky
        lit = dict(prm, shadow_strength=0.0)
        prm.update(shadow_strength=0.5, shadow_gap_m=0.04)
        with_shadows, without = build_world(copy.deepcopy(rng), prm, size), build_world(copy.deepcopy(rng), lit, size)
        assert (with_shadows.idbuf == without.idbuf).all()
        assert (with_shadows.image <= without.image).all()
        sky = without.idbuf == -1
        assert (with_shadows.image[sky] == without.image[sky]).all()
        shaded += int((with_shadows.image < without.image).any(-1).mean() > 0.02)
    assert shaded >= 5


def _one_leaf(length: float = 200.0):
    leaves = leaf_batch(np.random.default_rng(0), [160.0], [120.0], [length], [0.3], [1.0])
    leaves.update(length=np.array([length], np.float32), width_ratio=np.array([0.5], np.float32), curve=np.zeros(1, np.float32))
    canvas = np.full((240, 320, 3), 120, np.uint8)
    idbuf = np.zeros((240, 320), np.int32)
    half_a, half_b, rib = (p[0] for p in leaf_polygons(leaves))
    draw_leaf(canvas, idbuf, half_a, half_b, rib, np.full((3, 3), 120.0), False, leaf_code(0))
    return leaves, canvas, idbuf


def _structure(cup=0.0, vein_amp=0.0):
    return dict(cup=np.array([cup], np.float32), along=np.zeros(1, np.float32), vein_pairs=np.array([8.0], np.float32),
                vein_slope=np.array([1.2], np.float32), vein_amp=np.array([vein_amp], np.float32))


def test_leaf_structure_shades_inside_the_leaf_only():
    """A cupped leaf is lighter towards its edge, veins are thin lines (not the whole blade), nothing
    outside the leaf changes, the id-buffer gets the occluder code back, and out-of-focus leaves stay flat."""
    leaves, flat, idbuf = _one_leaf()
    inside = idbuf == leaf_code(0)
    assert inside.sum() > 3000

    cupped, ids = flat.copy(), idbuf.copy()
    shade_leaves(cupped, ids, leaves, _structure(cup=0.4), np.ones(1, np.float32))
    assert (ids == 0).all() and (cupped[~inside] == flat[~inside]).all()
    ys, xs = np.nonzero(inside)
    c, s = math.cos(0.3), math.sin(0.3)
    across = np.abs(-(xs - 160) * s + (ys - 120) * c)
    values = cupped[ys, xs, 1].astype(float)
    assert values[across > 0.6 * across.max()].mean() > values[across < 0.2 * across.max()].mean() + 10

    veined, ids = flat.copy(), idbuf.copy()
    shade_leaves(veined, ids, leaves, _structure(vein_amp=0.2), np.ones(1, np.float32))
    brighter = (veined[..., 1] > flat[..., 1] + 5) & inside
    assert 0.03 < brighter.sum() / inside.sum() < 0.4

    blurred, ids = flat.copy(), idbuf.copy()
    shade_leaves(blurred, ids, leaves, _structure(cup=0.4, vein_amp=0.2), np.zeros(1, np.float32))
    assert (blurred == flat).all() and (ids == 0).all()


def test_leaf_structure_changes_leaves_not_labels(monkeypatch):
    """Rendered with and without leaf structure: the same labels, the same sky and apple pixels; only
    leaf pixels differ, and no leaf code is left in the id-buffer."""
    import copy

    from pomona.pipeline.procedural import scene as scene_mod

    size, changed = (320, 256), 0
    for seed in range(4):
        rng = scene_rng("apples", seed)
        prm = sample_params("apples", rng, size, frozenset())
        textured = scene_mod.build_world(copy.deepcopy(rng), prm, size)
        monkeypatch.setattr(scene_mod, "leaf_structure", lambda _rng, n: {k: np.zeros(n, np.float32) + (k == "vein_pairs") for k in
                                                                          ("cup", "along", "vein_pairs", "vein_slope", "vein_amp")})
        flat = scene_mod.build_world(copy.deepcopy(rng), prm, size)
        monkeypatch.undo()
        assert (textured.idbuf == flat.idbuf).all() and textured.idbuf.min() >= -1
        not_leaf = flat.idbuf != 0
        assert (textured.image[not_leaf] == flat.image[not_leaf]).all()
        changed += int((textured.image != flat.image).any(-1).mean() > 0.05)
    assert changed >= 3


def test_switching_a_family_off_leaves_the_others_draws_alone():
    """Each later family draws from its own child stream, spawned whatever is switched off: an ablation row
    then differs from the baseline only in the family it switches off."""
    keys = ("sharpen", "sharpen_px", "grain", "grain_px", "grain_seed", "shadow_strength", "shadow_gap_m")
    for seed in range(5):
        base = sample_params("apples on a sunny day", scene_rng("apples on a sunny day", seed), (96, 96), frozenset())
        no_clutter = sample_params("apples on a sunny day", scene_rng("apples on a sunny day", seed), (96, 96), frozenset({"clutter"}))
        assert {k: base[k] for k in keys} == {k: no_clutter[k] for k in keys}


# --- the scene's layer builders, each on its own -----------------------------------------------------
def _layout(seed: int, size=(320, 256), focal: float = 400.0, distance: float = 1.5):
    from pomona.pipeline.procedural.scene import _Layout

    rng = np.random.default_rng(seed)
    lay = _Layout(rng, size[0], size[1], focal, distance)
    lay.extra = rng.spawn(1)[0]
    return lay


def test_branch_builder_crosses_the_frame_with_widths_that_shrink_with_depth():
    """Limbs start at the frame's edge or inside it and mostly cross it; a branch is 1-3.5 cm thick whatever
    its depth, so a row three times farther away has branches about a third as wide in pixels."""
    from pomona.pipeline.procedural.scene import _branches

    mean_px = {}
    for distance in (1.0, 3.0):
        widths, crossing = [], []
        for seed in range(6):
            lay = _layout(seed, distance=distance)
            _branches(lay, {"trunk": False})
            assert 1 <= len(lay.branches) and lay.bark_choice >= 0
            for z, pts, bark in lay.branches:
                assert lay.z_front - 0.3 < z < lay.z_back + 0.3
                assert -2 * 320 < pts[0, 0] < 3 * 320 and -2 * 320 < pts[0, 1] < 256 + 2 * 320
                assert 0.002 < pts[0, 2] / lay.ppm(z) < 0.036, "branch width in metres"
                assert bark.shape == (3,) and bark.dtype == np.float32
                widths.append(pts[0, 2])
                crossing.append(((pts[:, 0] >= 0) & (pts[:, 0] < 320) & (pts[:, 1] >= 0) & (pts[:, 1] < 256)).any())
        assert np.mean(crossing) > 0.5
        mean_px[distance] = np.mean(widths)
    assert mean_px[3.0] < 0.6 * mean_px[1.0]

    lay = _layout(0, distance=1.0)
    _branches(lay, {"trunk": True})
    z, trunk, _ = lay.branches[0]
    assert trunk[0, 1] > 256 and trunk[0, 2] / lay.ppm(z) >= 0.05, "the trunk rises from below the frame, thicker than any limb"


def test_canopy_builder_stops_at_its_leaf_area_or_its_leaf_cap():
    """Rosettes on the branches fill at most ~60% of the target area; free clusters then stop once the
    target is reached (overshooting by at most one cluster) or, in a dense canopy, once the leaf cap is;
    the per-leaf arrays stay aligned."""
    from pomona.pipeline.procedural.scene import _branches, _canopy_behind

    for seed, (density, sky) in enumerate([(0.5, 0.0), (0.8, 0.5), (1.0, 0.3), (1.4, 0.0)]):
        lay = _layout(seed)
        _branches(lay, {"trunk": False})
        _canopy_behind(lay, {"leaf_density": density, "sky_fraction": sky})
        target = density * 320 * 256 * 1.5 * (1 - 0.6 * sky)
        biggest_cluster = 8 * 0.2 * (lay.ppm(lay.z_front) * 0.14) ** 2
        if density < 1.4:
            assert lay.n_leaves() < lay.leaf_cap(density), "this canopy fills by area, not by the leaf cap"
            assert target <= lay.leaf_area < target + biggest_cluster
        else:
            assert lay.leaf_cap(density) <= lay.n_leaves() < lay.leaf_cap(density) + 8
            assert 0.6 * target < lay.leaf_area < target
        sizes = [[len(a) for a in arrays] for arrays in (lay.leaf_x, lay.leaf_y, lay.leaf_len, lay.leaf_ang, lay.leaf_z)]
        assert all(s == sizes[0] for s in sizes)
        z = np.concatenate(lay.leaf_z)
        assert lay.z_front - 0.4 < z.min() and z.max() < lay.z_back + 0.4


def _fruit_params(seed: int, size=(320, 256), **overrides) -> dict:
    prm = sample_params("apples", scene_rng("apples", seed), size, frozenset())
    prm.update(no_apples=False, border_cut=False, apple_px_at_distance=20.0)  # small apples: the frame's area never limits the count
    prm.update(overrides)
    return prm


def test_fruit_builder_hangs_the_requested_count_in_the_front_of_the_canopy():
    """Each density gives a count in its range (twice that in a frame twice as wide, as in a drive-by
    panorama); heavily occluded apples hang deeper than lightly occluded ones, all in the front half of
    the canopy; each front leaf and twig is added to the layout and counted."""
    from pomona.pipeline.procedural.scene import _branches, _fruit

    ranges = {"few": (1, 6), "normal": (6, 20), "many": (16, 45)}
    depth = {"low": [], "heavy": []}
    for seed in range(2):
        for density, (lo, hi) in ranges.items():
            for occlusion in depth:
                for views in (1, 2):
                    lay = _layout(seed, size=(320 * views, 256))
                    prm = _fruit_params(seed, density=density, occlusion=occlusion, front_leaf_fraction=0.5)
                    _branches(lay, prm)
                    n_branches, n_leaves = len(lay.branches), lay.n_leaves()
                    apples, front_leaf_ratio, front_twigs = _fruit(lay, prm)
                    assert lo * views <= len(apples) <= hi * views, (density, views, len(apples))
                    z = np.array([a["z"] for a in apples])
                    assert (z > lay.z_front - 0.15).all() and (z < lay.z_front + 0.5 * lay.span + 0.15).all()
                    depth[occlusion] += list((z - lay.z_front) / lay.span)
                    assert len(lay.branches) - n_branches == front_twigs
                    assert lay.n_leaves() - n_leaves == len(front_leaf_ratio)
                    assert all(0 < a["sun_scale"] <= 1.0 or a["sun_scale"] == 0.0 for a in apples)
    assert np.mean(depth["heavy"]) > np.mean(depth["low"]) + 0.15

    lay = _layout(0)
    state = lay.rng.bit_generator.state
    assert _fruit(lay, _fruit_params(0, no_apples=True)) == ([], [], 0)
    assert lay.rng.bit_generator.state == state and not lay.leaf_x and not lay.branches


def test_clutter_builder_gives_nothing_when_everything_is_off():
    """No posts, poles, painted posts, tapes, wires or hose: no clutter, and neither stream is drawn from;
    one of each gives one item of each, in a fixed order."""
    from pomona.pipeline.procedural.scene import _branches, _clutter

    lay = _layout(3)
    _branches(lay, {"trunk": False})
    states = lay.rng.bit_generator.state, lay.extra.bit_generator.state
    off = dict(posts=0, poles=0, banded_posts=0, tapes=0, wires=0, hose=False, band_chance=1.0)
    assert _clutter(lay, off) == []
    assert (lay.rng.bit_generator.state, lay.extra.bit_generator.state) == states

    items = _clutter(lay, dict(off, posts=1, poles=1, banded_posts=1, tapes=1, wires=1, hose=True))
    assert [kind for _, kind, _ in items] == ["post", "post", "post", "tape", "wire", "wire"]
    assert all(p["bands"] for _, kind, p in items if kind == "post"), "band_chance 1: every post is marked"
    assert all(0.5 * lay.distance < z < 1.6 * lay.distance for z, _, _ in items)
    lay.branches.clear()
    assert _clutter(lay, dict(off, tapes=3)) == [], "tape is tied to a branch: none without branches"


def test_back_to_front_drawing_lets_the_nearer_object_win():
    """Two overlapping apples and a branch across them: the nearer apple keeps the overlap, the branch in
    front cuts both; with occlusion 'none' the apples are drawn over everything."""
    from pomona.pipeline.procedural import apples as apples_mod
    from pomona.pipeline.procedural.scene import _draw_back_to_front

    def draw(occlusion):
        lay = _layout(0)
        prm = _fruit_params(0, occlusion=occlusion, background_blur_px=0.0, shadow_strength=0.0, light="sunny")
        far = apples_mod.apple_spec(lay.rng, prm, 150.0, 128.0, 40.0, lay.z_front + 0.4)
        near = apples_mod.apple_spec(lay.rng, prm, 190.0, 128.0, 40.0, lay.z_front + 0.1)
        for a in (far, near):
            a["sun_scale"] = 1.0
        pts = np.array([[130.0, 40.0, 8.0], [130.0, 130.0, 8.0], [130.0, 220.0, 8.0]], np.float32)  # across the far apple only
        lay.branches.append((lay.z_front, pts, np.array([0.2, 0.25, 0.3], np.float32)))
        image, idbuf = np.full((256, 320, 3), 100, np.uint8), np.zeros((256, 320), np.int32)
        image = _draw_back_to_front(lay, prm, image, idbuf, None, [far, near], [])
        return image, idbuf

    image, idbuf = draw("partial")
    assert image.shape == (256, 320, 3) and (image != 100).any()
    assert idbuf[128, 170] == 2, "the overlap belongs to the nearer apple"
    assert idbuf[128, 118] == 1 and idbuf[128, 215] == 2
    assert idbuf[128, 130] == 0, "the branch in front cuts the far apple"
    _, idbuf = draw("none")
    assert idbuf[128, 130] == 1 and idbuf[128, 170] == 2
