"""Seed-perturbation stability: do a model's predictions hold when the seed point moves?

The protocol of the FMCIB study (Pai et al., Nat Mach Intell 2024, Extended Data Fig. 3: 50
perturbations per seed from a 3-D normal distribution, "a variance of 16 voxels" per axis), with the
predictions compared by Cohen's kappa:

- each evaluated patient's seed (the lesion the evaluation used) is moved ``trials`` times (50) by
  an offset drawn from N(0, sd²) per axis, sd = 4 voxels of the patch grid (4 mm at 1 mm), from a
  recorded seed;
- the patch (and its mask) is extracted again from the CT volume at the moved seed, with the patch
  step's own settings, and embedded by the model;
- each patient is scored by the linear probe of the cross-validation fold that held it out (the
  folds and seed of ``evaluation``) through ``probes.probe_scores``, whose score of a row depends on
  that row alone: its unperturbed score is bit for bit its out-of-fold score there, and an unmoved
  seed (sd 0) gives exactly the unperturbed predictions; a prediction is "high risk" when the score
  is above the median unperturbed out-of-fold score of the labelled patients, so both classes are
  present;
- per trial and endpoint: Cohen's kappa between the perturbed and unperturbed predictions
  (scikit-learn), the share of predictions that changed, and the AUC of the perturbed scores (the
  FMCIB figure); per patient and trial, the cosine similarity of the embedding to the stored one.

Before any trial, the patch (and mask patch) at the unmoved seed is extracted again and must equal
the stored one byte for byte: a volume or mask changed since the patches step is an error, not a
silent shift.

Cost: ``trials`` × patients patch extractions and forward passes, hence its own asset.

On an artifact store (``UPath`` folders) the seeds' volumes and masks are named as the seeds table records them
(relative to the artifact root, or absolute as earlier versions wrote them: ``Layout.resolve``) and copied to a
local scratch file for SimpleITK one volume at a time (``staging.local_file``); the outputs are written whole, and
``metrics.json`` names its inputs relative to the root (the same bytes on every root).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from radassets.datasets import DatasetVersion
from radassets.evaluation import SD_VOXELS, TRIALS
from radassets.evaluation.evaluate import SEED, endpoint_labels, evaluable
from radassets.evaluation.figures import FigureWriter, seed_stability_figure, stamp_text, table_caption
from radassets.evaluation.probes import linear_probe_folds, probe_scores
from radassets.evaluation.citations import Citations
from radassets.evaluation.report import (citations_lines, licence_warning_lines, recorded_path, write_citations,
                                         write_html)
from radassets.evaluation.report_pdf import write_report_pdf
from radassets.evaluation.step_reports import StabilityReport
from radassets.imaging.patches import PatchSpec, extract_mask_patch, extract_patch, load_patches
from radassets.layout import Layout
from radassets.staging import local_file
from radassets.storage import atomic_path, atomic_write_json, atomic_write_text, sha256_json
from radassets.errors import RadassetsError

Progress = Callable[[int, int, str], None]


class PerturbationError(RadassetsError, ValueError):
    """Seed perturbation cannot be run on these inputs (named in the message)."""


@dataclass
class EndpointProbe:
    """One endpoint's probes: per patient (row of ``patients``) its fold's model, and the split threshold."""

    name: str
    rows: np.ndarray  # rows of ``patients`` with a binary label
    y: np.ndarray
    models: dict[int, Any]  # patient row → the probe of the fold that held it out
    unperturbed: np.ndarray  # out-of-fold scores, in the order of ``rows``
    threshold: float


def endpoint_probes(definition: DatasetVersion, clinical: pd.DataFrame, patients: pd.DataFrame, x: np.ndarray,
                    seed: int = SEED) -> tuple[list[EndpointProbe], dict[str, str]]:
    """The cross-validated probe of every evaluable endpoint, and the reason for each endpoint left out."""
    probes, skipped = [], {}
    x = np.asarray(x, float)  # as linear_probe fits and scores: float64 (the scaler keeps float32 otherwise)
    for i, endpoint in enumerate(definition.endpoints):
        _, joined = endpoint_labels(definition, i, clinical, patients)
        labelled = joined[joined["label"].notna()]
        y, rows = labelled["label"].to_numpy(int), labelled["index"].to_numpy()
        if not evaluable(y):
            skipped[endpoint.name] = f"{int(y.sum())} positive and {int(len(y) - y.sum())} negative patients"
            continue
        models, oof = {}, np.zeros(len(y))
        for held_out, model in linear_probe_folds(x[rows], y, seed):
            oof[held_out] = probe_scores(model, x[rows[held_out]])
            models.update({int(rows[j]): model for j in held_out})
        probes.append(EndpointProbe(endpoint.name, rows, y, models, oof, float(np.median(oof))))
    return probes, skipped


def patch_spec_of(patches_dir: Path) -> PatchSpec:
    """The settings the patches step used (from its manifest)."""
    spec = json.loads((patches_dir / "manifest.json").read_text())["spec"]
    return PatchSpec(**{f.name: spec[f.name] for f in fields(PatchSpec)})


def _cosine(vectors: np.ndarray, reference: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference)
    return vectors @ reference / np.maximum(norms, 1e-12)


def _read_image(recorded: str, layout: Layout | None) -> sitk.Image:
    """The volume or mask a seeds table names (``Layout.resolve``; as a local path without a layout), read from a
    local copy where it is on the artifact store."""
    path = layout.resolve(recorded) if layout is not None else Path(recorded)
    with local_file(path) as local:
        return sitk.ReadImage(str(local))


def perturbed_embeddings(extractor, patients: pd.DataFrame, seeds: pd.DataFrame, patches_dir: Path,
                         spec: PatchSpec, offsets: np.ndarray, batch_size: int = 8,
                         progress: Progress | None = None, layout: Layout | None = None) -> np.ndarray:
    """(trials, patients, dim) embeddings of each patient's patch at its seed moved by ``offsets``
    (trials, patients, 3) LPS mm. NaN rows where the model returned non-finite values. ``layout``: the artifact
    root the seeds' paths are resolved against."""
    stored, stored_masks, patch_rows = load_patches(patches_dir)
    by_seed = seeds.set_index("seed_id")
    trials, n = offsets.shape[:2]
    out = np.full((trials, n, extractor.dim), np.nan, dtype=np.float32)
    order = sorted(range(n), key=lambda p: by_seed.loc[patients["seed_id"].iloc[p], "ct_path"])
    image_path, image = None, None
    for done, p in enumerate(order, start=1):
        patient = patients.iloc[p]
        seed_row = by_seed.loc[patient["seed_id"]]
        if seed_row["ct_path"] != image_path:  # patients sorted by volume: each volume is read once
            ct_path = layout.resolve(seed_row["ct_path"]) if layout is not None else Path(seed_row["ct_path"])
            if not ct_path.is_file():
                raise PerturbationError(f"patient {patient['PatientID']}: the volume {seed_row['ct_path']} is gone; "
                                        f"materialize 'volumes' again")
            image_path, image = seed_row["ct_path"], _read_image(seed_row["ct_path"], layout)
        mask = _read_image(seed_row["mask_path"], layout) if isinstance(seed_row["mask_path"], str) else None
        center = np.array([seed_row["coordX"], seed_row["coordY"], seed_row["coordZ"]], float)
        patch_index = int(patient["patch_index"])
        if not np.array_equal(extract_patch(image, center, spec), stored[patch_index]):
            raise PerturbationError(f"patient {patient['PatientID']}: the patch extracted again from {image_path} "
                                    f"differs from the stored patch; the volume changed since the patches step "
                                    f"(materialize 'patches' and 'embeddings' again)")
        if mask is not None and not np.array_equal(extract_mask_patch(mask, center, spec), stored_masks[patch_index]):
            raise PerturbationError(f"patient {patient['PatientID']}: the mask patch extracted again from "
                                    f"{seed_row['mask_path']} differs from the stored one; the mask changed since the "
                                    f"patches step (materialize 'patches' and 'embeddings' again)")
        row = patch_rows[patch_index]
        for start in range(0, trials, batch_size):
            stop = min(trials, start + batch_size)
            centers = center + offsets[start:stop, p]
            hu = np.stack([extract_patch(image, c, spec) for c in centers])
            masks = (np.stack([extract_mask_patch(mask, c, spec) for c in centers]) if mask is not None
                     else np.zeros_like(hu, dtype=np.uint8))
            vectors = np.asarray(extractor.embed(hu, masks, [row] * (stop - start)), dtype=np.float32)
            finite = np.isfinite(vectors).all(axis=1)
            out[start:stop, p][finite] = vectors[finite]
        if progress:
            progress(done, n, f"{patient['PatientID']}: {trials} moved seeds embedded")
    return out


def seed_perturbation(definition: DatasetVersion, extractor, patients: pd.DataFrame, x: np.ndarray,
                      clinical: pd.DataFrame, seeds: pd.DataFrame, patches_dir: Path, *, trials: int = TRIALS,
                      sd_voxels: float = SD_VOXELS, seed: int = SEED, batch_size: int = 8,
                      progress: Progress | None = None, layout: Layout | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """Metrics and the per (trial, patient) table of one model's seed-perturbation stability.

    ``patients`` and ``x``: the evaluation's patients (``patient_embeddings``) and their stored
    embeddings. Only patients with a label for some evaluable endpoint are perturbed.
    """
    if extractor.entry.kind == "table":
        raise PerturbationError(f"model {extractor.entry.name!r} is a table of precomputed vectors per patient; "
                                f"they do not depend on the seed, so seed perturbation does not apply")
    if trials < 2 or sd_voxels < 0:
        raise PerturbationError(f"seed perturbation needs at least 2 trials and sd_voxels >= 0, got {trials} and "
                                f"{sd_voxels}")
    probes, skipped = endpoint_probes(definition, clinical, patients, x, seed)
    if not probes:
        raise PerturbationError(f"{definition.name}: no endpoint is evaluable ({skipped}); nothing to perturb")
    rows = np.unique(np.concatenate([p.rows for p in probes]))
    spec = patch_spec_of(patches_dir)
    sd_mm = sd_voxels * spec.spacing_mm
    offsets = np.random.default_rng(seed).normal(0.0, sd_mm, size=(trials, len(rows), 3))
    vectors = perturbed_embeddings(extractor, patients.iloc[rows], seeds, patches_dir, spec, offsets,
                                   batch_size, progress, layout)
    position = {int(r): j for j, r in enumerate(rows)}

    table = pd.DataFrame({
        "trial": np.repeat(np.arange(trials), len(rows)),
        "PatientID": np.tile(patients["PatientID"].to_numpy()[rows], trials),
        "seed_id": np.tile(patients["seed_id"].to_numpy()[rows], trials),
        "dx_mm": offsets[..., 0].ravel(), "dy_mm": offsets[..., 1].ravel(), "dz_mm": offsets[..., 2].ravel(),
        "embedded": np.isfinite(vectors).all(axis=2).ravel(),
        "cosine": np.stack([_cosine(np.nan_to_num(vectors[:, j]), x[r]) for j, r in enumerate(rows)], axis=1).ravel(),
    })
    table.loc[~table["embedded"], "cosine"] = np.nan
    endpoints: dict[str, Any] = {}
    for probe in probes:
        cols = [position[int(r)] for r in probe.rows]
        score = np.full((trials, len(cols)), np.nan)
        for k, r in enumerate(probe.rows):
            v = vectors[:, position[int(r)]].astype(float)
            ok = np.isfinite(v).all(axis=1)
            if ok.any():
                score[ok, k] = probe_scores(probe.models[int(r)], v[ok])
        base = probe.unperturbed > probe.threshold
        per_trial = []
        for t in range(trials):
            ok = np.isfinite(score[t])
            moved = score[t, ok] > probe.threshold
            per_trial.append({
                "trial": t, "patients": int(ok.sum()),
                "kappa": float(cohen_kappa_score(base[ok], moved)) if ok.sum() else float("nan"),
                "changed": float(np.mean(moved != base[ok])) if ok.sum() else float("nan"),
                "auc": float(roc_auc_score(probe.y[ok], score[t, ok])) if len(set(probe.y[ok])) == 2 else float("nan"),
            })
        column = np.full((trials, len(rows)), np.nan)
        column[:, cols] = score
        table[f"score_{probe.name}"] = column.ravel()
        kappas = np.array([t["kappa"] for t in per_trial])
        aucs = np.array([t["auc"] for t in per_trial])
        endpoints[probe.name] = {
            "patients": int(len(probe.rows)), "positives": int(probe.y.sum()),
            "threshold": probe.threshold, "unperturbed_auc": float(roc_auc_score(probe.y, probe.unperturbed)),
            "kappa_mean": float(np.nanmean(kappas)), "kappa_sd": float(np.nanstd(kappas, ddof=1)),
            "kappa_median": float(np.nanmedian(kappas)), "kappa_min": float(np.nanmin(kappas)),
            "changed_mean": float(np.nanmean([t["changed"] for t in per_trial])),
            "auc_mean": float(np.nanmean(aucs)), "auc_sd": float(np.nanstd(aucs, ddof=1)),
            "trials": per_trial,
        }
    cosine = table["cosine"].dropna()
    metrics = {
        "protocol": {
            "trials": trials, "sd_voxels": sd_voxels, "sd_mm": sd_mm, "seed": seed,
            "offsets": "N(0, sd²) per LPS axis, independent per patient and trial",
            "patch": spec.as_dict(),
            "probe": "Linear probe of the evaluation: each patient scored by the model of the fold that held it out",
            "prediction": "high risk if the score is above the median unperturbed out-of-fold score",
            "agreement": "Cohen's kappa (scikit-learn) of perturbed vs unperturbed predictions, per trial",
        },
        "patients_perturbed": int(len(rows)),
        "failed_embeddings": int((~table["embedded"]).sum()),
        "offset_sd_observed_mm": float(np.std(offsets)),
        "cosine": {"mean": float(cosine.mean()), "median": float(cosine.median()), "min": float(cosine.min()),
                   "q05": float(cosine.quantile(0.05))} if len(cosine) else None,
        "endpoints": endpoints,
        "endpoints_not_evaluable": skipped,
    }
    return metrics, table


def write_outputs(metrics: dict[str, Any], table: pd.DataFrame, out_dir: Path, title: str,
                  identity: dict[str, Any], stamp: bool = True, citations: Citations | None = None) -> dict[str, Any]:
    """``perturbations.parquet``, ``seed_stability`` (.png, .pdf, .svg), ``metrics.json``, ``report.md``,
    ``report.html``, ``report.pdf`` and ``references.bib`` (what ``citations`` names)."""
    lineage_id = sha256_json({**identity, "protocol": metrics["protocol"]})[:16]
    metrics = {**identity, "lineage_id": lineage_id, **metrics}
    if citations is not None:  # after the lineage id: what the result cites is not one of its inputs
        metrics["citations"] = citations.as_json()
        write_citations(metrics, out_dir)
    with atomic_path(out_dir / "perturbations.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    figures = FigureWriter(lineage_id, stamp=stamp, keep=True)
    seed_stability_figure(metrics, table, title, out_dir / "seed_stability.png", figures)
    metrics["figures"] = ["seed_stability.png"]
    markdown = report_markdown(metrics, title)
    atomic_write_text(out_dir / "report.md", markdown)
    write_html(out_dir / "report.html", report_markdown(metrics, title, out_dir), "radassets seed stability",
               metrics["lineage_id"])
    write_report_pdf(out_dir / "report.pdf", markdown, figures, f"radassets seed stability: {title}")
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics


def report_markdown(metrics: dict[str, Any], title: str, embed_from: Path | None = None) -> str:
    p = metrics["protocol"]
    lines = [f"# Seed-perturbation stability: {title}", "", *licence_warning_lines(metrics),
             f"{metrics['patients_perturbed']} patients, {p['trials']} trials each: seeds moved by N(0, "
             f"{p['sd_mm']:g}² mm²) per axis ({p['sd_voxels']:g} voxels of the {p['patch']['spacing_mm']:g} mm patch "
             f"grid; observed SD {metrics['offset_sd_observed_mm']:.2f} mm), seed {p['seed']}. {p['probe']}; "
             f"{p['prediction']}. {p['agreement']}.", ""]
    if metrics["failed_embeddings"]:
        lines += [f"{metrics['failed_embeddings']} perturbed patches gave non-finite embeddings and are left out.", ""]
    lines += ["| endpoint | patients | Cohen's kappa, mean ± SD (min) | predictions changed | AUC unperturbed | "
              "AUC perturbed, mean ± SD |", "|---|---|---|---|---|---|"]
    for name, e in metrics["endpoints"].items():
        lines.append(f"| {name} | {e['patients']} | {e['kappa_mean']:.3f} ± {e['kappa_sd']:.3f} ({e['kappa_min']:.3f}) "
                     f"| {e['changed_mean']:.1%} | {e['unperturbed_auc']:.3f} | {e['auc_mean']:.3f} ± {e['auc_sd']:.3f} |")
    lines += ["", table_caption(f"seed-perturbation stability, {title}", metrics["lineage_id"])]
    if metrics["cosine"]:
        c = metrics["cosine"]
        lines += ["", f"Cosine similarity of perturbed to stored embeddings: mean {c['mean']:.6f}, median "
                      f"{c['median']:.6f}, 5th percentile {c['q05']:.6f}, min {c['min']:.6f}."]
    for name, why in metrics["endpoints_not_evaluable"].items():
        lines += ["", f"Endpoint `{name}` not evaluable: {why}."]
    src = "seed_stability.png"
    if embed_from is not None:
        src = "data:image/png;base64," + base64.b64encode((embed_from / src).read_bytes()).decode()
    lines += ["", f"![seed_stability.png]({src})", "",
              f"*seed_stability.png · lineage id `{metrics['lineage_id']}`*", "", *citations_lines(metrics), "---",
              f"radassets seed stability · lineage id `{metrics['lineage_id']}` (also in the figure's metadata, PNG, PDF "
              f"and SVG, and its stamp `{stamp_text(metrics['lineage_id'])}`)"]
    return "\n".join(lines) + "\n"


def run_seed_stability(definition: DatasetVersion, model: str, embeddings_dir: Path, seeds_parquet: Path,
                       patches_dir: Path, out_dir: Path, *, trials: int = TRIALS, sd_voxels: float = SD_VOXELS,
                       seed: int = SEED, batch_size: int = 8, device: str = "auto", download: bool = True,
                       progress: Progress | None = None, source_root: Path | None = None,
                       registry_dir: Path | None = None, weights_dir: Path | None = None,
                       data_root: Path | None = None, layout: Layout | None = None,
                       stamp: bool = True) -> StabilityReport:
    """Seed-perturbation stability of one (dataset version, model), written under ``out_dir``; the model
    from the registry ``registry_dir``, its weights from ``weights_dir``; ``layout``: the artifact root that the
    seeds' paths and the recorded inputs are relative to."""
    from radassets.evaluation.report import read_evaluation_inputs
    from radassets.models import registry
    from radassets.models.embed import choose_device
    from radassets.models.extractors import load_extractor

    inputs = read_evaluation_inputs(definition, model, embeddings_dir, seeds_parquet, source_root, layout)
    if not (patches_dir / "manifest.json").is_file():
        raise PerturbationError(f"{definition.name} × {model}: {patches_dir / 'manifest.json'} is missing; "
                                f"materialize 'patches' first")
    extractor = load_extractor(registry.get(model, registry_dir), choose_device(device), download,
                               weights_dir=weights_dir, data_root=data_root)
    if extractor.weights_sha256 != inputs.manifest.get("weights_sha256"):
        raise PerturbationError(f"{definition.name} × {model}: the weights now registered "
                                f"({extractor.weights_sha256}) are not those of the stored embeddings "
                                f"({inputs.manifest.get('weights_sha256')}); materialize 'embeddings' again")
    with seeds_parquet.open("rb") as f:
        seeds = pd.read_parquet(f)
    metrics, table = seed_perturbation(definition, extractor, inputs.patients, inputs.x, inputs.clinical,
                                       seeds, patches_dir, trials=trials, sd_voxels=sd_voxels, seed=seed,
                                       batch_size=batch_size, progress=progress, layout=layout)
    patches_manifest = json.loads((patches_dir / "manifest.json").read_text())
    identity = {"dataset_version": definition.name, "model": model,
                "weights_sha256": inputs.manifest.get("weights_sha256"),
                "preprocessing_hash": inputs.manifest.get("preprocessing_hash"),
                "inputs": {**inputs.files, "patches": {"path": recorded_path(patches_dir, layout),
                                                       "content_hash": patches_manifest["content_hash"]}}}
    citations = Citations.of_dataset(definition, layout, {model: inputs.manifest.get("weights_sha256")}, registry_dir)
    return StabilityReport.of(write_outputs(metrics, table, out_dir, f"{definition.name} × {model}", identity, stamp,
                                            citations), out_dir)
