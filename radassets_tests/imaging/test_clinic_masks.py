"""Masks as clinics make them (``radassets.demo.cases.clinic_masks``): each lands on its CT's grid with the lesion's
true centre, or is refused with its own code; the structure sets against plastimatch 1.10.

Tolerances: a centroid is within half the largest voxel spacing (1 mm: the 2 mm slices) of the lesion's true
centre, the discretisation of a lesion some 16 mm across on that grid. Where the mask file was made from the true
mask on the CT's own grid (boundary contours through the pixel edges, SEG frames on the CT's slices), the mask
read back is that true mask, voxel for voxel. Against plastimatch (same grid, same pixel-centre rule) the masks
are identical (Dice 1, centroids 0 mm apart)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest
import SimpleITK as sitk

from radassets.demo.cases import clinic_masks as cm
from radassets.imaging.ct import read_ct_series
from radassets.imaging.masks import (
    MaskError, centroid_lps, read_mask_header, read_rtstruct, read_seg_segments, rois_by_series,
)
from radassets.imaging.volumes import convert_dataset

PLASTIMATCH = Path(sys.executable).parent / "plastimatch"


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("clinic_masks")


@pytest.fixture(scope="module")
def case(root):
    """Each case written once per module, on first use."""
    written: dict[str, cm.MaskCase] = {}
    makers = {
        "between": lambda: cm.rtstruct_between_slices(root / "between"),
        "outside": lambda: cm.rtstruct_refused(root / "outside", "outside"),
        "tilted": lambda: cm.rtstruct_refused(root / "tilted", "tilted"),
        "open": lambda: cm.rtstruct_open_and_point(root / "open"),
        "ring": lambda: cm.rtstruct_ring_and_islands(root / "ring"),
        "two": lambda: cm.rtstruct_two_series(root / "two"),
        "span": lambda: cm.rtstruct_two_series(root / "span", span=True),
        "seg": lambda: cm.seg_variants(root / "seg"),
    }

    def get(name: str) -> cm.MaskCase:
        if name not in written:
            written[name] = makers[name]()
        return written[name]

    return get


def ct_image(c: cm.MaskCase, series: str | None = None) -> sitk.Image:
    folder = c.ct[series] if series else next(iter(c.ct.values()))
    return read_ct_series(sorted(folder.glob("*.dcm"))).image


def array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image) > 0


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def centre_error(image: sitk.Image, lesion) -> float:
    return float(np.linalg.norm(centroid_lps(image) - np.asarray(lesion.center)))


def plastimatch(rtstruct: Path, ct_folder: Path, out: Path, xor: bool = False) -> dict[str, sitk.Image]:
    """plastimatch 1.10's masks, one NRRD per structure, on the CT's grid."""
    if out.exists():
        shutil.rmtree(out)
    command = [str(PLASTIMATCH), "convert", "--input", str(rtstruct), "--referenced-ct", str(ct_folder),
               "--output-prefix", str(out), "--prefix-format", "nrrd"] + (["--xor-contours"] if xor else [])
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)
    return {p.stem: sitk.ReadImage(str(p)) for p in sorted(out.glob("*.nrrd"))}


def assert_same_as_plastimatch(ours: sitk.Image, theirs: sitk.Image) -> None:
    assert theirs.GetSize() == ours.GetSize()
    assert np.allclose(theirs.GetOrigin(), ours.GetOrigin(), atol=1e-3)
    assert np.allclose(theirs.GetSpacing(), ours.GetSpacing(), atol=1e-6)
    assert dice(array(ours), array(theirs)) == 1.0
    assert np.linalg.norm(centroid_lps(ours) - centroid_lps(sitk.Cast(theirs > 0, sitk.sitkUInt8))) <= 1e-6


# --- RTSTRUCT: contours between the CT's slices --------------------------------------------------------------------

def expected_from_drawing_planes(c: cm.MaskCase, label: str) -> np.ndarray:
    """The convention's answer: each drawing plane's pixel-centre mask on the CT slice nearest to it, planes
    landing on one slice OR-ed."""
    geom = next(iter(c.geometry.values()))
    drawn = c.drawing
    _, masks = cm.Phantom(cm.BODY, (c.lesions[label],)).render(drawn.points())
    out = np.zeros((geom.n_slices, geom.rows, geom.cols), dtype=bool)
    for j in range(drawn.n_slices):
        k = (drawn.slice_position(j)[2] - geom.origin[2]) / geom.slice_spacing
        assert abs(k - round(k)) < 0.45  # no plane is near a tie between two slices
        out[round(k)] |= masks[label][j]
    return out


def test_contours_between_slices_go_to_the_nearest_slice(case, root):
    c = case("between")
    image = ct_image(c)
    reading = read_rtstruct(c.masks["rtstruct"], image, c.frame_of_reference)
    [gtv] = reading.segments
    assert reading.skipped == {}
    np.testing.assert_array_equal(array(gtv.image), expected_from_drawing_planes(c, "GTV-1"))
    assert centre_error(gtv.image, c.lesions["GTV-1"]) <= 0.5 * max(image.GetSpacing())
    # plastimatch also rounds each contour to its nearest slice and ORs the planes that meet there.
    assert_same_as_plastimatch(gtv.image, plastimatch(c.masks["rtstruct"], next(iter(c.ct.values())),
                                                      root / "pm-between")["GTV-1"])


@pytest.mark.parametrize("kind,code", [("outside", "contour_out_of_bounds"), ("tilted", "contour_not_on_slice")])
def test_a_contour_off_the_volume_or_off_the_slice_planes_is_refused(case, kind, code):
    c = case(kind)
    header = read_mask_header(c.masks["rtstruct"])
    with pytest.raises(MaskError) as caught:
        read_rtstruct(c.masks["rtstruct"], ct_image(c), c.frame_of_reference)
    assert caught.value.code == code
    assert header.series_uid in str(caught.value) and "ROI GTV-1, contour" in str(caught.value)


# --- RTSTRUCT: open and point contours -----------------------------------------------------------------------------

def test_open_and_point_contours_are_skipped_and_counted(case, root):
    c = case("open")
    reading = read_rtstruct(c.masks["rtstruct"], ct_image(c), c.frame_of_reference)
    assert reading.skipped == cm.OPEN_AND_POINT_SKIPPED
    assert sorted(reading.without_area) == ["line", "marker"]  # ROIs of points and polylines give no segment
    [gtv] = reading.segments
    assert gtv.label == "GTV-1" and gtv.contours_skipped == 3
    # Filled as polygons, the polylines would cut into the lesion's slice: the mask is the lesion's, exactly.
    np.testing.assert_array_equal(array(gtv.image), c.truth["GTV-1"])
    assert centre_error(gtv.image, c.lesions["GTV-1"]) <= 0.5 * max(gtv.image.GetSpacing())
    theirs = plastimatch(c.masks["rtstruct"], next(iter(c.ct.values())), root / "pm-open")
    assert sorted(theirs) == ["GTV-1"]  # plastimatch skips them too, and writes no structure for marker and line
    assert_same_as_plastimatch(gtv.image, theirs["GTV-1"])
    assert "7 open or point contour(s) skipped" in reading.note()


# --- RTSTRUCT: holes and islands -----------------------------------------------------------------------------------

def test_an_inner_contour_is_a_hole_and_islands_stay_apart(case, root):
    c = case("ring")
    segments = {s.label: s for s in read_rtstruct(c.masks["rtstruct"], ct_image(c), c.frame_of_reference).segments}
    ring, islands = segments["ring"], segments["islands"]
    np.testing.assert_array_equal(array(ring.image), c.truth["ring"])
    assert c.truth["hole"].sum() > 100 and not array(ring.image)[c.truth["hole"]].any()  # every hole voxel empty
    assert centre_error(ring.image, c.lesions["ring-outer"]) <= 0.5 * max(ring.image.GetSpacing())
    np.testing.assert_array_equal(array(islands.image), c.truth["islands"])
    components = sitk.ConnectedComponent(islands.image)
    assert sitk.GetArrayViewFromImage(components).max() == 2
    for n in (1, 2):
        part = sitk.Cast(components == n, sitk.sitkUInt8)
        nearest = min(("island-left", "island-right"), key=lambda k: centre_error(part, c.lesions[k]))
        assert centre_error(part, c.lesions[nearest]) <= 0.5 * max(islands.image.GetSpacing())
    ct_folder = next(iter(c.ct.values()))
    xor = plastimatch(c.masks["rtstruct"], ct_folder, root / "pm-ring-xor", xor=True)
    assert_same_as_plastimatch(ring.image, xor["ring"])
    assert_same_as_plastimatch(islands.image, xor["islands"])
    # plastimatch's default ORs nested contours: it fills the hole.
    filled = array(plastimatch(c.masks["rtstruct"], ct_folder, root / "pm-ring")["ring"])
    assert filled[c.truth["hole"]].all()


# --- RTSTRUCT: a structure set drawn on two CT series --------------------------------------------------------------

def test_each_roi_is_placed_on_the_series_its_contours_name(case, root):
    c = case("two")
    header = read_mask_header(c.masks["rtstruct"])
    groups = rois_by_series(header)
    names = {number: label for number, label, _ in header.roi_series}
    assert {uid: [names[n] for n in numbers] for uid, numbers in groups.items()} == \
        {c.ct_of["GTV-A"]: ["GTV-A"], c.ct_of["GTV-B"]: ["GTV-B"]}
    for label in ("GTV-A", "GTV-B"):
        series = c.ct_of[label]
        image = ct_image(c, series)
        [segment] = read_rtstruct(c.masks["rtstruct"], image, c.frame_of_reference, groups[series]).segments
        assert segment.label == label
        np.testing.assert_array_equal(array(segment.image), c.truth[label])
        assert centre_error(segment.image, c.lesions[label]) <= 0.5 * max(image.GetSpacing())
        theirs = plastimatch(c.masks["rtstruct"], c.ct[series], root / f"pm-{label}")
        assert_same_as_plastimatch(segment.image, theirs[label])
    # GTV-B lies below the chest series: on its grid it is refused, not clipped.
    with pytest.raises(MaskError, match="GTV-B") as caught:
        read_rtstruct(c.masks["rtstruct"], ct_image(c, c.ct_of["GTV-A"]), c.frame_of_reference)
    assert caught.value.code == "contour_out_of_bounds"


def test_an_roi_drawn_on_two_series_is_refused(case):
    header = read_mask_header(case("span").masks["rtstruct"])
    with pytest.raises(MaskError, match="ROI 3 \\(GTV-AB\\) has contours drawn on 2 CT series") as caught:
        rois_by_series(header)
    assert caught.value.code == "roi_spans_series"


def _rows(c: cm.MaskCase, masks: dict[str, Path]) -> list[dict]:
    rows = [{"PatientID": f"CLINIC-{c.name}", "Modality": "CT", "SeriesInstanceUID": uid, "crdc_series_uuid": f"{c.name}-ct-{n}",
             "status": "verified", "folder": str(folder)} for n, (uid, folder) in enumerate(sorted(c.ct.items()))]
    for name, path in masks.items():
        header = read_mask_header(path)
        rows.append({"PatientID": f"CLINIC-{c.name}", "Modality": header.modality, "SeriesInstanceUID": header.series_uid,
                     "crdc_series_uuid": f"{c.name}-mask-{name}", "status": "verified", "folder": str(path.parent),
                     "file": str(path)})
    return rows


def _files(row: dict) -> list[Path]:
    return [Path(row["file"])] if "file" in row else sorted(Path(row["folder"]).glob("*.dcm"))


def test_convert_dataset_names_each_segments_own_ct(case, tmp_path):
    two, span, opened = case("two"), case("span"), case("open")
    rows = _rows(two, two.masks) + _rows(span, {"span": span.masks["rtstruct"]}) + _rows(opened, opened.masks)
    report = convert_dataset(rows, _files, tmp_path / "out")
    by_uuid = {r["crdc_series_uuid"]: r for r in report.qc if r["Modality"] != "CT"}
    placed = {s["segment_label"]: s for s in report.segments if s["mask_crdc_series_uuid"] == "two-series-mask-rtstruct"}
    assert {label: s["SeriesInstanceUID"] for label, s in placed.items()} == two.ct_of
    for label, s in placed.items():
        mask = sitk.ReadImage(str(tmp_path / "out" / s["mask_path"]))
        ct = sitk.ReadImage(str(tmp_path / "out" / s["ct_path"]))
        assert mask.GetSize() == ct.GetSize() and np.allclose(mask.GetOrigin(), ct.GetOrigin())
        assert s["voxels"] == int(two.truth[label].sum())
        assert centre_error(mask, two.lesions[label]) <= 0.5 * max(ct.GetSpacing())
    two_row = by_uuid["two-series-mask-rtstruct"]
    assert two_row["status"] == "ok" and set(two_row["referenced_ct"].split(", ")) == set(two.ct)
    assert two_row.get("contours_skipped") is None
    spanned = by_uuid["two-series-span-mask-span"]
    assert spanned["status"] == "failed" and spanned["code"] == "roi_spans_series"
    assert read_mask_header(span.masks["rtstruct"]).series_uid in spanned["message"]
    opened_row = by_uuid["open-and-point-mask-rtstruct"]
    assert opened_row["status"] == "ok" and opened_row["contours_skipped"] == 7
    assert "no segment" in opened_row["message"] and "marker" in opened_row["message"]
    table = pq.read_table(tmp_path / "out" / "qc.parquet").to_pylist()
    assert sorted(r["contours_skipped"] for r in table if r["contours_skipped"] is not None) == [7]


# --- SEG variants --------------------------------------------------------------------------------------------------

def _seg(c: cm.MaskCase, variant: str, image: sitk.Image) -> dict:
    return {s.label: s for s in read_seg_segments(c.masks[variant], image, c.frame_of_reference)}


def test_label_map_and_binary_seg_of_one_lesion_give_the_same_mask(case):
    c = case("seg")
    image = ct_image(c)
    header = read_mask_header(c.masks["labelmap"])
    assert header.modality == "SEG" and header.labels == ("GTV-1",)  # the background is not a segment
    assert str(pydicom.dcmread(c.masks["labelmap"], stop_before_pixels=True).SOPClassUID) == "1.2.840.10008.5.1.4.1.1.66.7"
    labelmap, binary = _seg(c, "labelmap", image)["GTV-1"], _seg(c, "binary-gtv1", image)["GTV-1"]
    np.testing.assert_array_equal(array(labelmap.image), array(binary.image))
    np.testing.assert_array_equal(array(labelmap.image), c.truth["GTV-1"])
    assert centre_error(labelmap.image, c.lesions["GTV-1"]) <= 0.5 * max(image.GetSpacing())


def test_overlapping_segments_are_each_their_own_mask(case):
    c = case("seg")
    assert (c.truth["GTV-1"] & c.truth["GTV-2"]).sum() > 20  # the case overlaps
    segments = _seg(c, "binary", ct_image(c))
    for label in ("GTV-1", "GTV-2"):
        np.testing.assert_array_equal(array(segments[label].image), c.truth[label])
        assert segments[label].voxels == int(c.truth[label].sum())
        assert centre_error(segments[label].image, c.lesions[label]) <= 0.5 * max(segments[label].image.GetSpacing())


def test_fractional_seg_is_the_voxels_at_least_half_inside(case):
    c = case("seg")
    image = ct_image(c)
    ds = pydicom.dcmread(c.masks["fractional"], stop_before_pixels=True)
    assert ds.SegmentationType == "FRACTIONAL" and ds.SegmentationFractionalType == "PROBABILITY"
    [gtv] = _seg(c, "fractional", image).values()
    # Occupancies are multiples of 1/27, none within 1/255 (the storage step) of 1/2: the threshold is unambiguous.
    np.testing.assert_array_equal(array(gtv.image), c.truth["GTV-1 occupancy"] >= 0.5)
    assert centre_error(gtv.image, c.lesions["GTV-1"]) <= 0.5 * max(image.GetSpacing())
    assert dice(array(gtv.image), c.truth["GTV-1"]) >= 0.9  # the occupancy half-line is near the centres' boundary


def test_sparse_seg_with_frames_out_of_slice_order_lands_on_the_ct(case):
    c = case("seg")
    image = ct_image(c)
    ds = pydicom.dcmread(c.masks["sparse-reordered"])
    z = [float(f.PlanePositionSequence[0].ImagePositionPatient[2]) for f in ds.PerFrameFunctionalGroupsSequence]
    assert len(z) == int(c.truth["GTV-1"].any(axis=(1, 2)).sum()) < image.GetSize()[2]  # only the lesion's frames
    assert z != sorted(z) and z != sorted(z, reverse=True)  # not in slice order
    [gtv] = _seg(c, "sparse-reordered", image).values()
    np.testing.assert_array_equal(array(gtv.image), c.truth["GTV-1"])
    assert centre_error(gtv.image, c.lesions["GTV-1"]) <= 0.5 * max(image.GetSpacing())


def test_cases_are_the_same_bytes_every_time(case, tmp_path):
    c = case("two")
    again = cm.rtstruct_two_series(tmp_path / "two")
    for name, path in c.masks.items():
        assert path.read_bytes() == again.masks[name].read_bytes()
    for uid, folder in c.ct.items():
        for f in sorted(folder.glob("*.dcm")):
            assert f.read_bytes() == (again.ct[uid] / f.name).read_bytes()
    seg_a = cm.seg_variants(tmp_path / "seg-a")
    seg_b = cm.seg_variants(tmp_path / "seg-b")
    for name in seg_a.masks:
        assert seg_a.masks[name].read_bytes() == seg_b.masks[name].read_bytes()


@pytest.mark.parametrize("kept", [0, 1])
def test_a_structure_set_listing_two_series_but_drawn_on_one_goes_to_that_one(case, tmp_path, kept):
    """Structure sets list every series of the study they were made in; the contours name the one they were drawn
    on, and that is where the ROI goes, whichever of the listed series sorts first."""
    two = case("two")
    ds = pydicom.dcmread(two.masks["rtstruct"])
    labels = sorted(two.ct_of)
    label = labels[kept]
    number = next(int(r.ROINumber) for r in ds.StructureSetROISequence if str(r.ROIName) == label)
    ds.StructureSetROISequence = [r for r in ds.StructureSetROISequence if int(r.ROINumber) == number]
    ds.ROIContourSequence = [r for r in ds.ROIContourSequence if int(r.ReferencedROINumber) == number]
    ds.RTROIObservationsSequence = [r for r in ds.get("RTROIObservationsSequence", [])
                                    if int(r.ReferencedROINumber) == number]
    path = tmp_path / "one-roi.dcm"
    ds.save_as(path, enforce_file_format=True)
    report = convert_dataset(_rows(two, {"one": path}), _files, tmp_path / "out")
    assert [(s["segment_label"], s["SeriesInstanceUID"]) for s in report.segments] == [(label, two.ct_of[label])]
