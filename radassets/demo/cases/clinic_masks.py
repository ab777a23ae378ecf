"""Masks as clinics make them: structure sets from treatment-planning systems and SEG variants, each written as
real DICOM (pydicom, highdicom, rt-utils through ``radassets.demo.dicom_writer``) around phantom lesions whose
true centres are known.

RTSTRUCT cases (``write_rtstruct`` builds the structure set; its contours are then replaced or added to):
- ``rtstruct_between_slices``: contours drawn on another reconstruction (1 mm planes, 0.3 mm off the 2 mm CT's
  slice centres), so every CT slice gets the contours of two drawing planes, none on a slice centre;
- ``rtstruct_refused``: one contour beyond the last slice (``outside``), or tilted across three slices (``tilted``);
- ``rtstruct_open_and_point``: OPEN_PLANAR and POINT contours in the lesion's ROI, and ROIs made only of them;
- ``rtstruct_ring_and_islands``: a ring (outer and inner contour on each plane: a hole) and two islands on the
  same planes;
- ``rtstruct_two_series``: one structure set drawn on two CT series of one frame of reference (a chest series and
  a lower series), each ROI on its own (``span=True``: one ROI drawn on both).

SEG cases (``seg_variants``): one CT and the same lesions as binary, label-map, fractional, overlapping and sparse
reordered SEGs.

Every UID is derived from the case's name and every timestamp is the demo's, so each case is the same bytes on
every run (``dicom_writer.canonicalize``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import CTImageStorage, generate_uid

from radassets.demo.dicom_writer import (
    MANUFACTURER, MODEL_NAME, Geometry, SeriesIds, boundary_contours, canonicalize, contour_item, write_ct_series,
    write_rtstruct,
)
from radassets.demo.phantom import Body, Lesion, Phantom, random_lesion

BODY = Body(torso=(45.0, 35.0), lung_center_x=20.0, lung_axes=(14.0, 20.0), spine_radius=8.0)
IDENTITY = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


@dataclass
class MaskCase:
    """A written case: its CT series, its mask file(s), and what they should convert to."""

    name: str
    ct: dict[str, Path]  # SeriesInstanceUID → folder of its files
    geometry: dict[str, Geometry]  # SeriesInstanceUID → its geometry
    masks: dict[str, Path]  # variant → mask file
    lesions: dict[str, Lesion]  # segment label → the lesion it outlines (its true centre)
    truth: dict[str, np.ndarray] = field(default_factory=dict)  # label → true mask (k, row, col) on its CT's grid
    ct_of: dict[str, str] = field(default_factory=dict)  # label → SeriesInstanceUID of the CT it was drawn on
    frame_of_reference: str = ""
    drawing: Geometry | None = None  # the reconstruction the contours were drawn on, where not the CT's


def uid(case: str, name: str) -> str:
    """A UID from the case's name: the same on every run."""
    return generate_uid(entropy_srcs=["radassets clinic_masks", case, name])


def geometry(n_slices: int = 30, slice_spacing: float = 2.0, z0: float = -29.0, size: int = 64,
             pixel: float = 1.5) -> Geometry:
    """Axial, square pixels, the in-plane field centred on the body axis."""
    corner = -(size - 1) / 2 * pixel
    return Geometry(rows=size, cols=size, row_spacing=pixel, col_spacing=pixel, slice_spacing=slice_spacing,
                    n_slices=n_slices, row_dir=(1.0, 0.0, 0.0), col_dir=(0.0, 1.0, 0.0), origin=(corner, corner, z0),
                    descending_instances=False)


def sphere(label: str, center: tuple[float, float, float], radius: float) -> Lesion:
    """A plain sphere (no lobulation, no texture): rings and islands of exact, known shape."""
    return Lesion(label=label, center=center, semi_axes=(radius, radius, radius), rotation=IDENTITY,
                  lobulation=(0.0, 0.0), mean_hu=40.0, heterogeneity=0.0, wave_vectors=((0.1, 0.0, 0.0),),
                  wave_phases=(0.0,))


def lesion(label: str, center: tuple[float, float, float], seed: int, diameter: float = 16.0) -> Lesion:
    """A lobulated, rotated ellipsoid (the demo's lesions) with a known centre."""
    return random_lesion(np.random.default_rng(seed), label, np.asarray(center), diameter, 0.3)


def _ids(case: str, series: str, geom: Geometry, number: int) -> SeriesIds:
    return SeriesIds(patient_id=f"CLINIC-{case}", patient_sex="O", patient_age="060Y", study_uid=uid(case, "study"),
                     series_uid=uid(case, series), frame_of_reference_uid=uid(case, "frame"), series_number=number,
                     series_description=f"{case} {series}",
                     sop_uids=tuple(uid(case, f"{series} {k}") for k in range(geom.n_slices)))


def write_ct(folder: Path, case: str, series: str, geom: Geometry, lesions: tuple[Lesion, ...],
             number: int = 1) -> tuple[list[Dataset], SeriesIds, dict[str, np.ndarray]]:
    """One CT series of the phantom (``folder``/``series``), its ids and the lesions' true masks on its grid."""
    hu, masks = Phantom(BODY, lesions).render(geom.points())
    ids = _ids(case, series, geom, number)
    ct = write_ct_series(folder / series, geom, ids, hu, [f"{k:04d}.dcm" for k in range(geom.n_slices)])
    return ct, ids, masks


def _keep(*ids: SeriesIds) -> set[str]:
    return {i.study_uid for i in ids} | {i.series_uid for i in ids} | {i.frame_of_reference_uid for i in ids} \
        | {s for i in ids for s in i.sop_uids}


def _rtstruct(path: Path, case: str, ct: list[Dataset], ct_folder: Path, geom: Geometry,
              masks: dict[str, np.ndarray], keep: set[str]) -> Dataset:
    return write_rtstruct(path, ct, ct_folder, geom, masks, uid(case, "rtstruct"), uid(case, "rtstruct sop"), keep,
                          lambda i: uid(case, f"generated {i}"))


def _roi(ds: Dataset, label: str) -> tuple[Dataset, Dataset]:
    """(StructureSetROISequence item, ROIContourSequence item) of the ROI named ``label``."""
    [number] = [int(r.ROINumber) for r in ds.StructureSetROISequence if r.ROIName == label]
    [contours] = [r for r in ds.ROIContourSequence if int(r.ReferencedROINumber) == number]
    [roi] = [r for r in ds.StructureSetROISequence if int(r.ROINumber) == number]
    return roi, contours


def add_roi(ds: Dataset, label: str, items: list[Dataset]) -> None:
    """A new ROI (a copy of the first one's ROI, contour and observation items) with the contours ``items``."""
    number = max(int(r.ROINumber) for r in ds.StructureSetROISequence) + 1
    roi, contours = copy.deepcopy(ds.StructureSetROISequence[0]), copy.deepcopy(ds.ROIContourSequence[0])
    roi.ROINumber, roi.ROIName = number, label
    contours.ReferencedROINumber, contours.ContourSequence = number, items
    ds.StructureSetROISequence.append(roi)
    ds.ROIContourSequence.append(contours)
    if "RTROIObservationsSequence" in ds:
        observation = copy.deepcopy(ds.RTROIObservationsSequence[0])
        observation.ObservationNumber = observation.ReferencedROINumber = number
        observation.ROIObservationLabel = label
        ds.RTROIObservationsSequence.append(observation)


def contours_on(geom: Geometry, mask: np.ndarray, sop_uids: list[str], plane_offset: float = 0.0) -> list[Dataset]:
    """Boundary contours of ``mask`` (k, row, col) on each slice of ``geom``, naming image ``sop_uids[k]``."""
    return [contour_item(geom, k, polygon, sop_uids[k], plane_offset=plane_offset)
            for k in range(geom.n_slices) for polygon in boundary_contours(mask[k])]


def _save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def rtstruct_between_slices(folder: Path) -> MaskCase:
    """GTV-1 contoured on a 1 mm reconstruction whose planes are 0.3 mm off the 2 mm CT's slice centres: each
    contour goes to the nearest CT slice (0.15 or 0.35 of a spacing away), two drawing planes per slice."""
    case = "between-slices"
    geom = geometry()
    gtv = lesion("GTV-1", (-20.3, -9.6, 1.1), seed=1)
    ct, ids, truth = write_ct(folder, case, "ct", geom, (gtv,))
    drawn = geometry(n_slices=59, slice_spacing=1.0, z0=geom.origin[2] + 0.3 - 1.0)
    _, drawn_masks = Phantom(BODY, (gtv,)).render(drawn.points())
    ds = _rtstruct(folder / "rtstruct" / "rtstruct.dcm", case, ct, folder / "ct", geom, {"GTV-1": truth["GTV-1"]},
                   _keep(ids))
    # Each contour names the CT image nearest to its plane, as a planning system drawing on a fused series would.
    nearest = [ids.sop_uids[min(geom.n_slices - 1, max(0, round((z - geom.origin[2]) / geom.slice_spacing)))]
               for z in (drawn.origin[2] + k * drawn.slice_spacing for k in range(drawn.n_slices))]
    _roi(ds, "GTV-1")[1].ContourSequence = contours_on(drawn, drawn_masks["GTV-1"], nearest)
    path = _save(ds, folder / "rtstruct" / "rtstruct.dcm")
    return MaskCase(case, {ids.series_uid: folder / "ct"}, {ids.series_uid: geom}, {"rtstruct": path},
                    {"GTV-1": gtv}, truth, {"GTV-1": ids.series_uid}, ids.frame_of_reference_uid, drawn)


def rtstruct_refused(folder: Path, kind: str) -> MaskCase:
    """GTV-1 with one bad contour: ``outside``, a copy of a contour moved two slice spacings above the CT's last
    slice; ``tilted``, a contour whose plane rises by three slice spacings across the lesion."""
    case = f"refused-{kind}"
    geom = geometry()
    gtv = lesion("GTV-1", (18.4, -8.2, 21.3), seed=2)
    ct, ids, truth = write_ct(folder, case, "ct", geom, (gtv,))
    ds = _rtstruct(folder / "rtstruct" / "rtstruct.dcm", case, ct, folder / "ct", geom, {"GTV-1": truth["GTV-1"]},
                   _keep(ids))
    items = _roi(ds, "GTV-1")[1].ContourSequence
    bad = copy.deepcopy(items[len(items) // 2])
    points = np.asarray(bad.ContourData, dtype=float).reshape(-1, 3)
    if kind == "outside":
        top = geom.slice_position(geom.n_slices - 1)[2]
        points[:, 2] = top + 2.0 * geom.slice_spacing
    elif kind == "tilted":
        x = points[:, 0]
        points[:, 2] += 3.0 * geom.slice_spacing * (x - x.mean()) / (x.max() - x.min())
    else:
        raise ValueError(kind)
    bad.ContourData = [f"{v:.4f}" for v in points.ravel()]
    items.append(bad)
    path = _save(ds, folder / "rtstruct" / "rtstruct.dcm")
    return MaskCase(case, {ids.series_uid: folder / "ct"}, {ids.series_uid: geom}, {"rtstruct": path},
                    {"GTV-1": gtv}, truth, {"GTV-1": ids.series_uid}, ids.frame_of_reference_uid)


def _open_item(points: np.ndarray, kind: str, sop_uid: str) -> Dataset:
    image = Dataset()
    image.ReferencedSOPClassUID = CTImageStorage
    image.ReferencedSOPInstanceUID = sop_uid
    item = Dataset()
    item.ContourImageSequence = [image]
    item.ContourGeometricType = kind
    item.NumberOfContourPoints = len(points)
    item.ContourData = [f"{v:.4f}" for v in np.asarray(points).ravel()]
    return item


# The open and point contours of ``rtstruct_open_and_point``, by ROI: what the reader must skip and count.
OPEN_AND_POINT_SKIPPED = {"GTV-1": 3, "marker": 3, "line": 1}


def rtstruct_open_and_point(folder: Path) -> MaskCase:
    """GTV-1's closed contours plus two OPEN_PLANAR polylines across it and a POINT at its centre; an ROI
    ``marker`` of three POINTs (reference marks) and an ROI ``line`` of one OPEN_NONPLANAR (a catheter)."""
    case = "open-and-point"
    geom = geometry()
    gtv = lesion("GTV-1", (-19.7, -10.4, -8.9), seed=3)
    ct, ids, truth = write_ct(folder, case, "ct", geom, (gtv,))
    ds = _rtstruct(folder / "rtstruct" / "rtstruct.dcm", case, ct, folder / "ct", geom, {"GTV-1": truth["GTV-1"]},
                   _keep(ids))
    k = int(round((gtv.center[2] - geom.origin[2]) / geom.slice_spacing))
    z = geom.slice_position(k)[2]
    c = np.asarray(gtv.center)
    # A polyline through the lesion (an open contour): filled as a polygon it would cut a wedge out of the slice.
    line = np.array([[c[0] - 8, c[1] - 8, z], [c[0] + 8, c[1] - 2, z], [c[0] + 8, c[1] + 8, z]])
    items = _roi(ds, "GTV-1")[1].ContourSequence
    items.extend([_open_item(line, "OPEN_PLANAR", ids.sop_uids[k]),
                  _open_item(line[::-1] + np.array([0.0, 2.0, 0.0]), "OPEN_PLANAR", ids.sop_uids[k]),
                  _open_item(np.array([[c[0], c[1], z]]), "POINT", ids.sop_uids[k])])
    marks = [np.array([[x, 20.0, geom.slice_position(j)[2]]]) for x, j in ((-30.0, 5), (0.0, 15), (30.0, 25))]
    add_roi(ds, "marker", [_open_item(m, "POINT", ids.sop_uids[j]) for m, j in zip(marks, (5, 15, 25))])
    bends = np.array([[0.0, 0.0, 0.0], [3.0, 1.0, 0.0], [6.0, 4.0, 0.0]])
    catheter = np.array([[5.0, 5.0, geom.slice_position(j)[2]] for j in (8, 12, 16)]) + bends
    add_roi(ds, "line", [_open_item(catheter, "OPEN_NONPLANAR", ids.sop_uids[12])])
    path = _save(ds, folder / "rtstruct" / "rtstruct.dcm")
    return MaskCase(case, {ids.series_uid: folder / "ct"}, {ids.series_uid: geom}, {"rtstruct": path},
                    {"GTV-1": gtv}, truth, {"GTV-1": ids.series_uid}, ids.frame_of_reference_uid)


def rtstruct_ring_and_islands(folder: Path) -> MaskCase:
    """ROI ``ring``: a sphere with a concentric spherical hole (outer and inner contour on each plane through the
    hole); ROI ``islands``: two spheres side by side on the same planes. ``lesions`` holds ring-outer, ring-hole,
    island-left and island-right; ``truth`` the ring and islands masks and the hole."""
    case = "ring-and-islands"
    geom = geometry()
    outer, hole = sphere("ring-outer", (-14.2, 2.3, -6.1), 13.0), sphere("ring-hole", (-14.2, 2.3, -6.1), 6.0)
    left, right = sphere("island-left", (10.6, -12.4, 13.3), 6.5), sphere("island-right", (28.1, -12.4, 13.3), 6.5)
    ct, ids, masks = write_ct(folder, case, "ct", geom, (outer, hole, left, right))
    truth = {"ring": masks["ring-outer"] & ~masks["ring-hole"], "islands": masks["island-left"] | masks["island-right"],
             "hole": masks["ring-hole"]}
    path = folder / "rtstruct" / "rtstruct.dcm"
    _rtstruct(path, case, ct, folder / "ct", geom, {"ring": truth["ring"], "islands": truth["islands"]}, _keep(ids))
    lesions = {"ring-outer": outer, "ring-hole": hole, "island-left": left, "island-right": right}
    return MaskCase(case, {ids.series_uid: folder / "ct"}, {ids.series_uid: geom}, {"rtstruct": path}, lesions, truth,
                    {"ring": ids.series_uid, "islands": ids.series_uid}, ids.frame_of_reference_uid)


def _reference_series(ds: Dataset, ids: SeriesIds) -> None:
    """List series ``ids`` and its images in the structure set's RTReferencedSeriesSequence."""
    study = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
    series = copy.deepcopy(study.RTReferencedSeriesSequence[0])
    series.SeriesInstanceUID = ids.series_uid
    template = series.ContourImageSequence[0]
    images = []
    for sop in ids.sop_uids:
        image = copy.deepcopy(template)
        image.ReferencedSOPInstanceUID = sop
        images.append(image)
    series.ContourImageSequence = images
    study.RTReferencedSeriesSequence.append(series)


def rtstruct_two_series(folder: Path, span: bool = False) -> MaskCase:
    """A chest series (``chest``, z -29..29 mm) and a lower one (``upper-abdomen``, 2.5 mm, z -100..-42.5 mm) on one
    frame of reference; GTV-A drawn on the chest series, GTV-B on the other, each contour naming its image. GTV-B
    lies outside the chest series, so it cannot be placed there. ``span``: a third ROI GTV-AB, drawn on both."""
    case = "two-series-span" if span else "two-series"
    chest, lower = geometry(), geometry(n_slices=24, slice_spacing=2.5, z0=-100.0)
    gtv_a = lesion("GTV-A", (20.8, -9.1, -3.7), seed=4)
    gtv_b = lesion("GTV-B", (-12.9, 6.2, -71.4), seed=5)
    ct_a, ids_a, truth_a = write_ct(folder, case, "chest", chest, (gtv_a, gtv_b), number=2)
    _, ids_b, truth_b = write_ct(folder, case, "upper-abdomen", lower, (gtv_a, gtv_b), number=3)
    path = folder / "rtstruct" / "rtstruct.dcm"
    ds = _rtstruct(path, case, ct_a, folder / "chest", chest, {"GTV-A": truth_a["GTV-A"]}, _keep(ids_a, ids_b))
    _reference_series(ds, ids_b)
    add_roi(ds, "GTV-B", contours_on(lower, truth_b["GTV-B"], list(ids_b.sop_uids)))
    if span:
        add_roi(ds, "GTV-AB", contours_on(chest, truth_a["GTV-A"], list(ids_a.sop_uids))
                + contours_on(lower, truth_b["GTV-B"], list(ids_b.sop_uids)))
    _save(ds, path)
    return MaskCase(case, {ids_a.series_uid: folder / "chest", ids_b.series_uid: folder / "upper-abdomen"},
                    {ids_a.series_uid: chest, ids_b.series_uid: lower}, {"rtstruct": path},
                    {"GTV-A": gtv_a, "GTV-B": gtv_b}, {"GTV-A": truth_a["GTV-A"], "GTV-B": truth_b["GTV-B"]},
                    {"GTV-A": ids_a.series_uid, "GTV-B": ids_b.series_uid}, ids_a.frame_of_reference_uid)


def shuffle_frames(seg: Dataset, seed: int) -> None:
    """Put a binary SEG's frames (pixel data and per-frame groups together) in a shuffled order, as some writers
    do; highdicom writes them in slice order. The frames no longer run through the volume, so the "3D"
    DimensionOrganizationType, which says they do, is dropped."""
    from pydicom.pixels import pack_bits

    frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns))
    order = np.random.default_rng(seed).permutation(len(frames))
    seg.PixelData = pack_bits(frames[order])
    seg.PerFrameFunctionalGroupsSequence = [seg.PerFrameFunctionalGroupsSequence[i] for i in order]
    if "DimensionOrganizationType" in seg:
        del seg.DimensionOrganizationType


def _segmentation(path: Path, case: str, name: str, ct: list[Dataset], pixels: np.ndarray, kind: str,
                  labels: list[str], keep: set[str], frame_seed: int | None = None, **options) -> Path:
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number, segment_label=label,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Neoplasm, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
        for number, label in enumerate(labels, start=1)
    ]
    series_uid, sop_uid = uid(case, f"{name} series"), uid(case, f"{name} sop")
    seg = hd.seg.Segmentation(
        source_images=ct, pixel_array=pixels, segmentation_type=kind, segment_descriptions=descriptions,
        series_instance_uid=series_uid, series_number=100, sop_instance_uid=sop_uid, instance_number=1,
        manufacturer=MANUFACTURER, manufacturer_model_name=MODEL_NAME, software_versions="radassets clinic_masks",
        device_serial_number="0", content_description=f"{name} segmentation", content_creator_name="radassets^demo",
        series_description=f"{name} SEG", **options)
    if frame_seed is not None:
        shuffle_frames(seg, frame_seed)
    # pydicom 3.0 does not know the Label Map Segmentation Storage class yet: kept by name, not replaced.
    canonicalize(seg, keep | {series_uid, sop_uid, *hd.seg.SOP_CLASS_UIDS}, lambda i: uid(case, f"{name} generated {i}"))
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path, enforce_file_format=True)
    return path


def occupancy(geom: Geometry, target: Lesion, n: int = 3) -> np.ndarray:
    """The fraction of each voxel inside ``target``, from n³ sub-voxel samples (n odd: never exactly a half)."""
    X, Y, Z = np.asarray(geom.row_dir), np.asarray(geom.col_dir), geom.normal
    points = geom.points()
    inside = np.zeros(points.shape[:-1], dtype=np.float64)
    steps = (np.arange(n) - (n - 1) / 2) / n
    for a in steps:
        for b in steps:
            for c in steps:
                shift = a * geom.col_spacing * X + b * geom.row_spacing * Y + c * geom.slice_spacing * Z
                inside += target.inside(points + shift)
    return inside / n**3


# The shuffle of the reordered SEG's frames.
REORDER_SEED = 16


def seg_variants(folder: Path) -> MaskCase:
    """One CT with GTV-1 and an overlapping GTV-2; SEGs: ``binary`` (both segments, overlapping), ``labelmap``
    (GTV-1 alone, Label Map Segmentation Storage), ``binary-gtv1`` (GTV-1 alone, binary), ``fractional`` (GTV-1's
    voxel occupancy, PROBABILITY) and ``sparse-reordered`` (GTV-1, empty frames omitted, frames in a shuffled
    slice order). ``truth`` also holds ``GTV-1 occupancy``."""
    case = "seg-variants"
    geom = geometry()
    gtv1 = lesion("GTV-1", (-18.9, -10.7, -2.3), seed=6, diameter=18.0)
    gtv2 = lesion("GTV-2", (-10.2, -6.1, 3.4), seed=7, diameter=14.0)
    ct, ids, truth = write_ct(folder, case, "ct", geom, (gtv1, gtv2))
    keep = _keep(ids)
    seg_folder = folder / "seg"
    both = np.stack([truth["GTV-1"], truth["GTV-2"]], axis=-1)
    one = truth["GTV-1"][..., None]
    fraction = occupancy(geom, gtv1)
    paths = {
        "binary": _segmentation(seg_folder / "binary.dcm", case, "binary", ct, both, "BINARY", ["GTV-1", "GTV-2"],
                                keep),
        "binary-gtv1": _segmentation(seg_folder / "binary-gtv1.dcm", case, "binary-gtv1", ct, one, "BINARY",
                                     ["GTV-1"], keep),
        "labelmap": _segmentation(seg_folder / "labelmap.dcm", case, "labelmap", ct,
                                  truth["GTV-1"].astype(np.uint8), "LABELMAP", ["GTV-1"], keep),
        "fractional": _segmentation(seg_folder / "fractional.dcm", case, "fractional", ct,
                                    fraction.astype(np.float32)[..., None], "FRACTIONAL", ["GTV-1"], keep,
                                    fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
                                    max_fractional_value=255),
        "sparse-reordered": _segmentation(seg_folder / "sparse-reordered.dcm", case, "sparse-reordered",
                                          ct, one, "BINARY", ["GTV-1"], keep, frame_seed=REORDER_SEED,
                                          omit_empty_frames=True),
    }
    truth = dict(truth, **{"GTV-1 occupancy": fraction})
    return MaskCase(case, {ids.series_uid: folder / "ct"}, {ids.series_uid: geom}, paths,
                    {"GTV-1": gtv1, "GTV-2": gtv2}, truth, {"GTV-1": ids.series_uid, "GTV-2": ids.series_uid},
                    ids.frame_of_reference_uid)
