"""Inference regions with sliding along the whole cavity wall (scripts/regions/cavity.py): synthetic and real
segmentations."""

import numpy as np
import pytest
from scipy import ndimage

from scripts.regions import cavity
from scripts.regions.cavity import body_mask, cavity_labels, cavity_mask, cavity_regions, snap_to_edge, wall_band
from scripts.regions.labels import JACOBIAN, RIGID, SLIDING, TOTALSEG_V2_TOTAL
from scripts.regions.masks import build_regularisation_mask, load_region_spec

LIVER, LUNG, RIB, VERTEBRA = (
    TOTALSEG_V2_TOTAL[n] for n in ("liver", "lung_lower_lobe_left", "rib_left_5", "vertebrae_T10")
)
SP = (2.0, 2.0, 2.0)


def _phantom():
    """Liver below a lung lobe (one cavity), a rib 1-3 voxels outside the cavity's x face, a vertebra far away (both
    as bright as bone), in a body whose surface is 1 voxel beyond the cavity's low-y face."""
    seg = np.zeros((40, 40, 40), dtype=np.uint8)
    seg[10:30, 10:30, 8:20] = LIVER
    seg[10:30, 10:30, 20:32] = LUNG
    seg[7:10, 12:28, 12:28] = RIB
    seg[33:37, 16:24, 16:24] = VERTEBRA
    image = np.full(seg.shape, -1000, dtype=np.int16)
    image[2:38, 9:38, 2:38] = 40
    image[np.isin(seg, (RIB, VERTEBRA))] = 400
    return seg, image


def test_wall_band_both_sides_rigid_bones_and_pairs():
    seg, image = _phantom()
    mask, normals = cavity_regions(seg, SP, image=image, band_mm=3.0)
    assert mask.dtype == np.uint8 and normals.shape == (3, 40, 40, 40) and normals.dtype == np.float32
    # wall band: 2 voxels (3 mm + half a voxel) on both sides of the wall; beside the rib (x 7-9) the wall keeps one
    # voxel off it (x = 10.5): the band is the rib's neighbour x = 10 outside, x = 11, 12 inside
    assert (mask[10:13, 20, 14] == SLIDING).all() and mask[13, 20, 14] == JACOBIAN and mask[20, 20, 14] == JACOBIAN
    assert (mask[7:10, 20, 14] == RIGID).all()  # the rib on the wall stays rigid: the slip is beside it
    assert (mask[7, 15:25, 15:25] == RIGID).all()  # the rib away from the wall stays rigid
    assert (mask[7:10, 15:25, 15:25] == RIGID).all()  # no band (wall, or lung / rib pair) covers a bone
    assert (mask[10, 15:25, 15:25] == SLIDING).all()  # the slip is in the soft tissue beside the rib
    assert (mask[33:37, 16:24, 16:24] == RIGID).all()  # the vertebra is more than 3 mm from the wall
    # outward normal on the flat face, on the soft-tissue side of the wall (the rib side is rigid)
    for x in (10, 11):
        assert -normals[0, x, 20, 14] > 0.995 and -normals[0, x, 20, 20] > 0.9999
    # lung-liver interface inside the cavity: not a wall, but a pair band of configs/regions.json
    assert mask[20, 20, 19] == SLIDING and mask[20, 20, 20] == SLIDING
    assert abs(abs(float(normals[2, 20, 20, 19])) - 1.0) < 0.05
    assert mask[20, 20, 26] == JACOBIAN
    # unit normals exactly on the sliding voxels
    norm = np.linalg.norm(normals, axis=0)
    assert np.allclose(norm[mask == SLIDING], 1.0, atol=1e-5) and (norm[mask != SLIDING] == 0).all()


def test_a_segmented_rib_short_of_its_bright_rim_gets_it_back_from_the_ct():
    seg, image = _phantom()
    image[7:10, 12:28, 12:28] = 400  # the rib, as bright as bone
    image[11, 12:28, 12:28] = 60  # soft tissue next to it (the cavity's side)
    eroded = seg.copy()
    eroded[7, 12:28, 12:28] = 0  # the segmenter lost the rib's outer voxel layer
    clean_mask, _ = cavity_regions(seg, SP, image=image)
    mask, _ = cavity_regions(eroded, SP, image=image)
    as_labelled, _ = cavity_regions(eroded, SP, image=image, bone_hu=None, unlabelled_bone_hu=None)
    assert (as_labelled[7, 12:28, 12:28] != RIGID).all()  # without the CT the rim is soft tissue
    assert (mask[7:10, 12:28, 12:28] == RIGID).all() and (mask == RIGID).sum() == (clean_mask == RIGID).sum()
    assert (mask[6, 12:28, 12:28] != RIGID).all() and (mask[10:12, 14:26, 14:26] != RIGID).all()  # dim: stays out


def test_a_rib_the_segmenter_lost_is_rigid_from_its_brightness_and_contrast_in_the_cavity_is_not():
    seg, image = _phantom()
    image[7:10, 12:28, 12:28] = 400  # the rib, as bright as bone
    image[20, 18:22, 10:14] = 300  # contrast in the liver, unlabelled (a vessel the segmenter left out)
    image[3, 20, 20] = 150  # a dim unlabelled voxel in the wall
    lost = seg.copy()
    lost[7:10, 12:28, 12:28] = 0  # the whole rib is gone (eroded away): no label left to grow from
    lost[20, 18:22, 10:14] = 0
    clean_mask, _ = cavity_regions(seg, SP, image=image)
    mask, _ = cavity_regions(lost, SP, image=image)
    labels_only, _ = cavity_regions(lost, SP, image=image, unlabelled_bone_hu=None)
    assert (labels_only[7:10, 12:28, 12:28] != RIGID).all()
    assert (mask[7:10, 12:28, 12:28] == RIGID).all() and (mask == RIGID).sum() == (clean_mask == RIGID).sum()
    assert (mask[20, 18:22, 10:14] != RIGID).all() and mask[3, 20, 20] != RIGID
    # the band keeps its voxel off the found rib, as off a labelled one
    assert (mask[10, 14:26, 14:26] == SLIDING).all() and (mask[10] == clean_mask[10]).all()
    labels_only_no_ct, _ = cavity_regions(lost, SP)  # without the CT nothing is found
    assert (labels_only_no_ct[7:10, 12:28, 12:28] != RIGID).all()


def test_a_lost_rib_found_from_its_bright_core_gets_its_dim_rim_too():
    """A rib that lost its label, with a bright core (400 HU) and a dim rim (150 HU, partial volume): the core is found
    from its brightness, and the rim is grown onto it as onto a labelled bone (before the rim growth ran first and
    the found core stayed bare: on the real CT with a segmenter's labels, 2.8 % of the true bone voxels)."""
    seg, image = _phantom()
    image[7:10, 12:28, 12:28] = 150  # the rib's rim
    image[8, 12:28, 12:28] = 400  # its core
    lost = seg.copy()
    lost[7:10, 12:28, 12:28] = 0
    mask, _ = cavity_regions(lost, SP, image=image)
    assert (mask[7:10, 12:28, 12:28] == RIGID).all()
    no_rim, _ = cavity_regions(lost, SP, image=image, bone_hu=None)
    assert (no_rim[8, 12:28, 12:28] == RIGID).all() and (no_rim[7, 12:28, 12:28] != RIGID).all()


def test_a_bone_label_shrunk_all_round_gets_its_edges_back_not_only_its_faces():
    """The vertebra's label one voxel short all round (a segmenter's eroded label), its outer layer dim (150 HU,
    partial volume: below the 200 HU that finds an unlabelled bone, so only the rim growth can take it back): the rim's
    faces touch the labelled core, its edges and corners only diagonally; all of it is rigid again, as with the clean
    label, and the soft tissue around it stays out. With the growth along the 6 neighbours alone the 64 edge and
    corner voxels stayed out: on the phantom with a segmenter's labels, the vertebrae's edges inside the closed cavity
    held 51-77 % of the bones' rigidity error (docs/README.md, bundle 0.9.22)."""
    seg, image = _phantom()
    vertebra = seg == VERTEBRA
    image[vertebra] = 150
    image[34:36, 17:23, 17:23] = 400  # the bright core
    eroded = seg.copy()
    eroded[vertebra & ~ndimage.binary_erosion(vertebra)] = 0
    clean_mask, _ = cavity_regions(seg, SP, image=image)
    mask, _ = cavity_regions(eroded, SP, image=image)
    assert (mask[33:37, 16:24, 16:24] == RIGID).all() and (mask == RIGID).sum() == (clean_mask == RIGID).sum()
    assert (mask[32, 16:24, 16:24] != RIGID).all() and (mask[33:37, 15, 16:24] != RIGID).all()  # 40 HU: stays out
    no_rim, _ = cavity_regions(eroded, SP, image=image, bone_hu=None)
    assert (no_rim[33:37, 16:24, 16:24] == RIGID).sum() == 2 * 6 * 6  # the label alone: the core


def test_a_bone_label_grown_into_fat_is_trimmed_by_the_ct():
    """The rib's label one voxel too thick on the cavity's side (into a layer of fat, -100 HU, as a segmenter's
    dilated label): with the CT and ``bone_trim_hu`` 0 (the value measured in docs/README.md) that layer is no bone,
    and the wall, its band and the rigid voxels are those of the clean label; without the trim (the default) or
    without the CT the layer is rigid and the wall keeps a voxel further in; a layer at 150 HU stays bone."""
    seg, image = _phantom()
    image[10, 12:28, 12:28] = -100
    grown = seg.copy()
    grown[10, 12:28, 12:28] = RIB
    clean, clean_normals = cavity_regions(seg, SP, image=image, bone_trim_hu=0.0)
    assert (clean == cavity_regions(seg, SP, image=image)[0]).all()  # a bright bone loses nothing
    mask, normals = cavity_regions(grown, SP, image=image, bone_trim_hu=0.0)
    assert (mask == clean).all() and np.abs(normals - clean_normals).max() < 0.05  # the liver label lost a layer
    assert (mask[10, 14:26, 14:26] == SLIDING).all() and (mask[7:10, 12:28, 12:28] == RIGID).all()
    untrimmed, _ = cavity_regions(grown, SP, image=image)
    assert (untrimmed[10, 12:28, 12:28] == RIGID).all() and (untrimmed[11:13, 14:26, 14:26] == SLIDING).all()
    no_ct, _ = cavity_regions(grown, SP, bone_trim_hu=0.0)
    assert (no_ct[10, 12:28, 12:28] == RIGID).all()
    image[10, 12:28, 12:28] = 150  # a bright layer is bone: kept
    kept, _ = cavity_regions(grown, SP, image=image, bone_trim_hu=0.0)
    assert (kept[7:11, 12:28, 12:28] == RIGID).all()


def test_a_lobe_the_segmenter_missed_is_content_from_its_darkness_and_air_away_from_the_content_is_not():
    """With the CT, unlabelled air touching the cavity's content is content: a lung lobe the segmenter left out
    keeps the wall at the lung's outer face, where the labels alone put the wall through the lung. An air pocket
    that the body encloses but no content label touches (as the air between the back and the table) stays out:
    taken in, the closing would have bridged the cavity over to it."""
    seg, image = _phantom()
    image[10:30, 10:30, 20:32] = -850  # the lung is dark
    image[4:36, 33:36, 4:36] = -1000  # an air pocket enclosed by the body, three voxels off the cavity
    missed = seg.copy()
    missed[10:30, 10:30, 26:32] = 0  # the lung's upper half unlabelled (a lobe left out)
    _, _, clean = cavity_regions(seg, SP, image=image, return_side=True)
    mask, _, side = cavity_regions(missed, SP, image=image, return_side=True)
    _, _, labels_only = cavity_regions(missed, SP, image=image, return_side=True, unlabelled_air_hu=None)
    assert labels_only[20, 20, 29] == 0 and side[20, 20, 29] == 1  # the missed lobe: out by its labels, in now
    assert (side[10:30, 10:30, 8:32] == clean[10:30, 10:30, 8:32]).all()  # the cavity the clean labels give
    assert mask[20, 20, 31] == SLIDING and mask[20, 20, 32] == SLIDING  # the wall band at the lung's outer face
    assert (side[:, 31:, :] == 0).all() and (clean[:, 31:, :] == 0).all()  # the pocket (y 33-35) stays out


def test_the_wall_side_is_the_cavity_and_unknown_on_the_pair_bands_off_the_wall():
    seg, image = _phantom()
    mask, normals, side = cavity_regions(seg, SP, image=image, return_side=True)
    plain, _ = cavity_regions(seg, SP, image=image)
    assert (mask == plain).all() and side.dtype == np.int8 and side.shape == seg.shape
    assert side[20, 20, 14] == 1 and side[3, 20, 20] == 0 and side[35, 20, 20] == 0  # liver inside; wall, vertebra out
    # the wall beside the rib (the cavity keeps a voxel off it): its band's two voxels, one on each side
    assert (mask[10:12, 20, 14] == SLIDING).all() and side[10, 20, 14] == 0 and side[11, 20, 14] == 1
    assert mask[20, 20, 19] == SLIDING and side[20, 20, 19] == -1  # lung-liver pair band: both sides are inside
    assert set(np.unique(side[mask != SLIDING]).tolist()) <= {0, 1}


def test_no_band_in_the_air_and_without_pairs():
    seg, image = _phantom()
    with_body, _ = cavity_regions(seg, SP, image=image, band_mm=3.0)
    without, _ = cavity_regions(seg, SP, band_mm=3.0)
    assert without[20, 8, 14] == SLIDING and with_body[20, 8, 14] == JACOBIAN  # y = 8 is air
    assert with_body[20, 9, 14] == SLIDING
    no_pairs, _ = cavity_regions(seg, SP, image=image, pairs=False)
    assert no_pairs[20, 20, 19] == JACOBIAN and no_pairs[10, 20, 14] == SLIDING and no_pairs[9, 20, 14] == RIGID


def test_outward_normals_on_a_sphere():
    g = np.indices((36, 36, 36)) - 17.5
    r = np.sqrt((g**2).sum(axis=0))
    seg = np.where(r < 11, LIVER, 0).astype(np.uint8)
    mask, normals = cavity_regions(seg, (1.5, 1.5, 1.5), band_mm=3.0)
    band = mask == SLIDING
    assert band.sum() > 1000
    radial = g[:, band] / r[band]
    cosine = (normals[:, band] * radial).sum(axis=0)
    assert cosine.min() > 0.97, cosine.min()
    assert np.all(np.abs(r[band] - 11) < 3.0 / 1.5 + 1.5)


def test_bad_inputs():
    seg, image = _phantom()
    with pytest.raises(ValueError, match="integer"):
        cavity_regions(seg.astype(np.float32) + 0.5, SP)
    with pytest.raises(ValueError, match="grid"):
        cavity_regions(seg, SP, image=image[:, :, :39])
    with pytest.raises(ValueError, match="bone_gap >= 0"):
        cavity_regions(seg, SP, bone_gap=-1)
    with pytest.raises(ValueError, match="spacing"):
        cavity_regions(seg, (2.0, 2.0))
    with pytest.raises(ValueError, match="3D"):
        cavity_regions(seg[0], SP)
    with pytest.raises(ValueError, match="unknown label name"):
        cavity_regions(seg, SP, spec={"groups": {"cavity_contents": ["livr"]}, "rigid": [], "sliding": []})


def test_default_band_is_one_voxel_on_each_side():
    seg, image = _phantom()
    mask, _ = cavity_regions(seg, SP, image=image)  # band_mm 1.5 on a 2 mm grid: the voxels either side of the wall
    assert mask[20, 9, 14] == SLIDING and mask[20, 10, 14] == SLIDING and mask[20, 11, 14] == JACOBIAN
    # beside the rib (x 7-9) the wall keeps one voxel off it: the rib's neighbour is the band's outer side, so the
    # rigidity term's central differences at the rib's surface do not span the slip
    assert mask[9, 20, 14] == RIGID and (mask[10:12, 20, 14] == SLIDING).all() and mask[12, 20, 14] == JACOBIAN
    assert mask[11, 20, 30] == JACOBIAN and mask[10, 20, 30] == SLIDING  # away from the rib (z >= 29): no gap
    touching, _ = cavity_regions(seg, SP, image=image, bone_gap=0)  # the cavity against the rib: one band voxel
    assert touching[9, 20, 14] == RIGID and touching[10, 20, 14] == SLIDING and touching[11, 20, 14] == JACOBIAN


def test_band_touches_the_wall_on_both_sides_on_an_anisotropic_grid():
    # 3.5 mm along y and z: the voxels beside the wall lie 3.5 mm from it, more than band_mm + half the finest voxel
    seg, _ = _phantom()
    mask, normals = cavity_regions(seg, (3.0, 3.5, 3.5))
    assert mask[20, 9, 14] == SLIDING and mask[20, 10, 14] == SLIDING and mask[20, 11, 14] == JACOBIAN
    assert mask[20, 20, 7] == SLIDING and mask[20, 20, 8] == SLIDING and mask[20, 20, 9] == JACOBIAN
    assert mask[10, 20, 14] == SLIDING and mask[9, 20, 14] == RIGID
    assert normals[1, 20, 9, 14] < -0.9 and normals[2, 20, 20, 7] < -0.9  # outward: towards low y, low z


@pytest.mark.parametrize("spacing", [(2.0, 2.0, 2.0), (1.0, 1.0, 1.0), (0.8, 0.8, 3.0), (0.5, 1.0, 1.5)])
@pytest.mark.parametrize("band_mm", [1.0, 1.5, 2.5, 4.0])
def test_the_wall_band_is_every_voxel_within_its_width_of_the_wall_dilated_or_transformed(
    spacing, band_mm, monkeypatch
):
    # a ball's wall: a voxel is in the band iff some voxel across the wall lies within band_mm + half the finest voxel
    # (brute force over all pairs); the ball's dilation (up to BAND_BALL_MAX offsets) and the distance transforms
    # (a wider ball, or BAND_BALL_MAX 0) give exactly those voxels
    sp = np.array(spacing)
    grid = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip((12, 11, 9), sp)], indexing="ij"))
    inside = ((grid - grid.reshape(3, -1).mean(1)[:, None, None, None]) ** 2).sum(0) < (0.3 * grid.max()) ** 2
    points = grid.reshape(3, -1).T
    pair = np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1))  # every voxel pair, mm
    across = inside.ravel()[:, None] != inside.ravel()[None]
    near = (np.where(across, pair, np.inf).min(1) - 0.5 * sp.min() <= band_mm + 1e-6).reshape(inside.shape)
    assert inside.any() and near.any() and not near.all()
    assert np.array_equal(wall_band(inside, sp, band_mm), near)
    monkeypatch.setattr(cavity, "BAND_BALL_MAX", 0)  # every ball too large: the distance transforms
    assert np.array_equal(wall_band(inside, sp, band_mm), near)


def test_snap_moves_a_wall_a_voxel_off_to_the_image_edge_and_leaves_a_flat_image_alone():
    """A bright ball of radius 10 voxels; labels one voxel inside or outside it are moved onto it (within the
    6-neighbour shape of a dilation: under a fifth of the ball's surface voxels differ, against all of them before);
    on a flat image, or with snap_mm below a voxel, nothing moves."""
    r = np.sqrt(((np.indices((40, 40, 40)) - 19.5) ** 2).sum(0))
    image = np.where(r < 10, 40.0, -100.0) + np.random.default_rng(0).normal(0.0, 5.0, r.shape)
    truth, spacing = r < 10, np.ones(3)
    surface = int((truth & (r >= 9)).sum())
    for labels in (r < 9, r < 11):
        before, after = int((labels ^ truth).sum()), int((snap_to_edge(labels, image, spacing, 2.0) ^ truth).sum())
        assert before > 0.9 * surface and after < 0.2 * surface, (before, after, surface)
    assert (snap_to_edge(r < 9, np.zeros_like(image), spacing, 2.0) == (r < 9)).all()
    assert (snap_to_edge(r < 9, image, spacing, 0.9) == (r < 9)).all()


def test_snap_moves_a_wall_a_voxel_off_to_where_a_field_shears_and_a_field_without_slip_moves_nothing():
    """A ball of radius 10 voxels turning about the z axis inside a still surrounding (a slip tangent to its surface
    everywhere): labels one voxel inside or outside it are moved onto it by the field's shear alone (the image is
    not used); a translation of everything (no slip) moves nothing."""
    x = np.indices((40, 40, 40)) - 19.5
    r = np.sqrt((x**2).sum(0))
    truth, spacing = r < 10, np.ones(3)
    turn = 0.2 * np.stack([-x[1], x[0], np.zeros_like(x[0])]) * truth  # mm, tangent to every sphere about the centre
    surface = int((truth & (r >= 9)).sum())
    for labels in (r < 9, r < 11):
        moved = snap_to_edge(labels, None, spacing, 2.0, field=turn)
        before, after = int((labels ^ truth).sum()), int((moved ^ truth).sum())
        assert before > 0.9 * surface and after < 0.2 * surface, (before, after, surface)
    still = np.broadcast_to(np.array([1.0, -2.0, 0.5])[:, None, None, None], x.shape)
    assert (snap_to_edge(r < 9, None, spacing, 2.0, field=still) == (r < 9)).all()


def test_cavity_group_of_the_default_spec():
    ids = cavity_labels()
    names = {TOTALSEG_V2_TOTAL[n] for n in ("liver", "spleen", "lung_upper_lobe_left", "heart", "colon")}
    assert names <= set(ids)
    assert not {TOTALSEG_V2_TOTAL[n] for n in ("aorta", "rib_left_5", "vertebrae_L1", "urinary_bladder")} & set(ids)


def test_real_segmentation(ct_example_dir):
    nib = pytest.importorskip("nibabel")
    seg = np.asarray(nib.load(str(ct_example_dir / "example_seg.nii.gz")).dataobj)
    ct = np.asarray(nib.load(str(ct_example_dir / "example_ct_sm.nii.gz")).dataobj)
    mask, normals = cavity_regions(seg, (3.0, 3.0, 3.0), image=ct)
    pairs_only = build_regularisation_mask(seg, load_region_spec())
    sliding = mask == SLIDING
    fraction = sliding.mean()
    assert 0.03 < fraction < 0.2, fraction
    assert sliding.sum() > 2 * (pairs_only == SLIDING).sum()  # far more than where two listed labels touch
    assert (seg[sliding] == 0).mean() > 0.3  # much of the wall is unlabelled tissue (body wall, fat)
    assert (mask == RIGID).sum() > 1000
    assert np.allclose(np.linalg.norm(normals[:, sliding], axis=0), 1.0, atol=1e-5)
    assert not (sliding & ~body_mask(ct)).any()


def test_wall_shift_moves_the_whole_wall_by_whole_voxels():
    """``wall_shift`` k dilates (k > 0) or erodes (k < 0) the cavity by k voxels before the band is built (the
    candidates of the wall search): a liver box's cavity side grows by exactly one voxel per face and
    step; a map moves each voxel's wall by its own shift; a fraction of a voxel or a map of another shape is
    refused."""
    seg = np.zeros((30, 30, 30), dtype=np.uint8)
    seg[10:20, 10:20, 10:20] = LIVER
    sides = {k: cavity_regions(seg, SP, return_side=True, wall_shift=k)[2] != 0 for k in (-1, 0, 2)}
    box = np.zeros(seg.shape, bool)
    box[10:20, 10:20, 10:20] = True
    assert (sides[0] == box).all()
    assert (sides[-1][11:19, 11:19, 11:19]).all() and int(sides[-1].sum()) == 8**3
    assert sides[2][8:22, 15, 15].all() and not sides[2][7, 15, 15] and not sides[2][22, 15, 15]
    # a map: the half x < 15 moved out by two voxels, the other half in by one
    halves = np.where(np.arange(30)[:, None, None] < 15, 2, -1) * np.ones(seg.shape, int)
    mapped = cavity_regions(seg, SP, return_side=True, wall_shift=halves)[2] != 0
    assert mapped[8, 15, 15] and not mapped[7, 15, 15] and mapped[18, 15, 15] and not mapped[19, 15, 15]
    assert (mapped[:15] == sides[2][:15]).all() and (mapped[15:] == sides[-1][15:]).all()
    with pytest.raises(ValueError, match="wall_shift must be whole voxels"):
        cavity_regions(seg, SP, wall_shift=0.5)
    with pytest.raises(ValueError, match=r"a \(30, 30, 30\) map"):
        cavity_regions(seg, SP, wall_shift=np.zeros((30, 30)))


def test_an_outward_wall_shift_keeps_off_the_bones_by_the_shift_too():
    """A wall shifted outwards grows only farther than ``bone_gap + wall_shift`` voxels from the bones: with a rib two
    voxels beyond one face of a liver box (where a segmenter might have shrunk it), the face towards it stays where
    the labels put it, while the opposite face moves out by the shift; inwards shifts are not limited."""
    seg = np.zeros((30, 30, 30), dtype=np.uint8)
    seg[10:20, 10:20, 10:20] = LIVER
    seg[22, 5:25, 5:25] = RIB  # two voxels beyond the face x = 19 (the label's gap voxel x = 20, 21 free)
    plain = cavity_regions(seg, SP, return_side=True)[2] != 0
    shifted = cavity_regions(seg, SP, return_side=True, wall_shift=2)[2] != 0
    assert plain[19, 15, 15] and not plain[20, 15, 15]
    assert not shifted[20, 15, 15] and not shifted[21, 15, 15]  # towards the rib: the labels' wall
    assert shifted[8, 15, 15] and not shifted[7, 15, 15]  # away from it: two voxels out
    assert (shifted | ~plain).all()  # never smaller than the labels' cavity


def test_the_walls_of_one_pair_close_its_cavity_and_fill_its_body_once():
    """The wall search asks for several walls of the same labels (scripts/regions/memo.py): the closing of the cavity
    and the body mask are computed once per labels and image, and each wall equals the one computed afresh; other
    labels are a new entry; a caller writing into a mask it got changes nothing for the next caller."""
    seg, image = _phantom()
    cavity_mask.cache_clear(), body_mask.cache_clear()
    walls = {k: cavity_regions(seg, SP, image=image, return_side=True, wall_shift=k) for k in (-1, 0, 1)}
    assert (cavity_mask.misses, cavity_mask.hits, body_mask.misses, body_mask.hits) == (1, 2, 1, 2)
    for k, wall in walls.items():
        cavity_mask.cache_clear(), body_mask.cache_clear()
        fresh = cavity_regions(seg, SP, image=image, return_side=True, wall_shift=k)
        assert all(np.array_equal(a, b) for a, b in zip(wall, fresh)), k
    assert not np.array_equal(walls[1][2], walls[0][2]) and not np.array_equal(walls[-1][2], walls[0][2])
    body = body_mask(image)
    body[:] = False
    assert body_mask(image).sum() > 20000 and body_mask.hits == 2
    shorter = seg.copy()
    shorter[10:30, 10:30, 8:14] = 0  # the liver's lowest six slices lost
    assert not np.array_equal(cavity_regions(shorter, SP, image=image, return_side=True)[2], walls[0][2])
    assert cavity_mask.misses == 2
