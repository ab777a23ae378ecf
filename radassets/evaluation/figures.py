"""Figures of an evaluation: ROC curve and Kaplan–Meier curves with numbers at risk.

Every PNG carries its lineage id in a PNG text chunk (``radassets:lineage_id``), so a figure copied
into a manuscript can be traced back (``radassets lineage trace``); the report prints the same id
under each figure. A figure is drawn to a local temporary file and put in place whole (``storage.atomic_path``),
also on the artifact store. Drawn with matplotlib (Agg) and lifelines' own KM plotting and at-risk table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from radassets.storage import atomic_path

LINEAGE_KEY = "radassets:lineage_id"


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, lineage_id: str) -> Path:
    plt = pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight", metadata={LINEAGE_KEY: lineage_id})
    plt.close(fig)
    return path


def lineage_id_of(path: Path) -> str | None:
    """The lineage id embedded in a PNG written here (None if absent); ``path`` local or on the artifact store."""
    with path.open("rb") as f, Image.open(f) as image:
        return image.text.get(LINEAGE_KEY) if hasattr(image, "text") else None


def roc_figure(label: np.ndarray, score: np.ndarray, auc: dict, title: str, path: Path, lineage_id: str) -> Path:
    from sklearn.metrics import roc_curve

    plt = pyplot()
    fpr, tpr, _ = roc_curve(np.asarray(label, int), np.asarray(score, float))
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.plot(fpr, tpr, color="#c0392b", lw=2,
            label=f"AUC {auc['auc']:.3f} (95% CI {auc['auc_ci_low']:.3f}–{auc['auc_ci_high']:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
    ax.set(xlabel="1 − specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01), title=title)
    ax.legend(loc="lower right", fontsize=8)
    n_pos, n = int(np.sum(label)), len(label)
    ax.text(0.98, 0.30, f"n = {n}, events = {n_pos}", ha="right", fontsize=8, transform=ax.transAxes)
    return save_figure(fig, path, lineage_id)


def km_figure(time_days: np.ndarray, event: np.ndarray, high: np.ndarray, groups: dict, title: str, path: Path,
              lineage_id: str, time_unit: str = "days") -> Path:
    from lifelines import KaplanMeierFitter
    from lifelines.plotting import add_at_risk_counts

    plt = pyplot()
    time_days, event, high = np.asarray(time_days, float), np.asarray(event, bool), np.asarray(high, bool)
    fig, ax = plt.subplots(figsize=(5.4, 4.6))
    fitters = []
    for mask, name, color in ((~high, "low risk", "#2471a3"), (high, "high risk", "#c0392b")):
        kmf = KaplanMeierFitter(label=f"{name} (n={int(mask.sum())})")
        kmf.fit(time_days[mask], event[mask])
        kmf.plot_survival_function(ax=ax, ci_show=True, color=color, show_censors=True,
                                   censor_styles={"ms": 4, "marker": "|"})
        fitters.append(kmf)
    ax.set(xlabel=f"time ({time_unit})", ylabel="survival probability", ylim=(0, 1.02), title=title)
    ax.legend(loc="lower left", fontsize=8)  # the statistics sit top right
    ax.text(0.98, 0.96, f"log-rank p = {groups['logrank_p']:.3g}\nHR {groups['hazard_ratio']:.2f} "
                        f"({groups['hr_ci_low']:.2f}–{groups['hr_ci_high']:.2f}), p = {groups['cox_p']:.3g}",
            ha="right", va="top", fontsize=8, transform=ax.transAxes)
    add_at_risk_counts(*fitters, ax=ax, rows_to_show=["At risk"])
    fig.tight_layout()
    return save_figure(fig, path, lineage_id)


def seed_stability_figure(metrics: dict, table, title: str, path: Path, lineage_id: str) -> Path:
    """Seed-perturbation stability: Cohen's kappa and AUC per trial for each endpoint (unperturbed AUC
    marked), and the embedding's cosine similarity against how far the seed moved."""
    plt = pyplot()
    names = list(metrics["endpoints"])
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2))
    rng = np.random.default_rng(0)  # horizontal jitter of the points only
    for ax, key, label in ((axes[0], "kappa", "Cohen's kappa vs unperturbed"), (axes[1], "auc", "AUC per trial")):
        values = [[t[key] for t in metrics["endpoints"][n]["trials"]] for n in names]
        ax.boxplot(values, showfliers=False, widths=0.5)
        for i, v in enumerate(values, start=1):
            ax.scatter(i + rng.uniform(-0.12, 0.12, len(v)), v, s=8, color="#2471a3", alpha=0.6, zorder=3)
        ax.set_xticks(range(1, len(names) + 1), names)
        floor = 0.0 if key == "kappa" else 0.5  # kappa 0: chance agreement; AUC 0.5: chance
        ax.set(ylabel=label, ylim=(min(floor, np.nanmin(np.concatenate(values)) - 0.05), 1.02))
    for i, n in enumerate(names, start=1):
        axes[1].scatter([i], [metrics["endpoints"][n]["unperturbed_auc"]], marker="D", color="#c0392b", zorder=4,
                        label="unperturbed" if i == 1 else None)
    axes[1].legend(loc="lower left", fontsize=8)
    distance = np.sqrt(table["dx_mm"] ** 2 + table["dy_mm"] ** 2 + table["dz_mm"] ** 2)
    axes[2].scatter(distance, table["cosine"], s=4, alpha=0.35, color="#555555")
    axes[2].set(xlabel="seed displacement (mm)", ylabel="cosine to the stored embedding")
    p = metrics["protocol"]
    fig.suptitle(f"{title}\n{metrics['patients_perturbed']} patients × {p['trials']} trials, "
                 f"seed moved by N(0, {p['sd_mm']:g}² mm²) per axis", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, lineage_id)
