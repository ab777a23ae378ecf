"""QC montage of a patches partition: axial, coronal and sagittal mid-slices with the mask outline.

Display follows the radiological convention: axial seen from the feet (patient right on the
viewer's left, anterior up), coronal and sagittal with superior up. Patch arrays are [S, P, L]
(see ``patches``), so axial slices need no flip and coronal/sagittal slices are flipped so that
superior is at the top. Window: lung (W 1500, L −600). Patches padded at the volume border are
titled in red.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from radassets.imaging.patch_store import PatchArray
from radassets.storage import atomic_path

WINDOW = (-1350, 150)  # lung window: level -600, width 1500
SEEDS_PER_ROW = 3  # 9 panels a row: about 1,200 px, the width of the UI's metadata dialog


def views(patch: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The three mid-slices of a [S, P, L] patch, oriented for display."""
    s, p, l = (n // 2 for n in patch.shape)
    return [("axial", patch[s]), ("coronal", patch[::-1, p, :]), ("sagittal", patch[::-1, :, l])]


def write_montage(patches: PatchArray, masks: PatchArray, rows: Sequence[dict[str, Any]], path: Path,
                  title: str, max_seeds: int = 24) -> Path:
    """A PNG montage of up to ``max_seeds`` patches (the first ones, in row order)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(len(rows), max_seeds)
    cols = SEEDS_PER_ROW * 3
    lines = max(1, -(-n // SEEDS_PER_ROW))
    fig, axes = plt.subplots(lines, cols, figsize=(cols * 1.25, lines * 1.45 + 0.5), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        row = rows[i]
        for v, ((name, image), (_, mask)) in enumerate(zip(views(np.asarray(patches[i])), views(np.asarray(masks[i])))):
            ax = axes[i // SEEDS_PER_ROW, (i % SEEDS_PER_ROW) * 3 + v]
            ax.imshow(image, cmap="gray", vmin=WINDOW[0], vmax=WINDOW[1], interpolation="nearest")
            if mask.any():
                ax.contour(mask, levels=[0.5], colors="#ff3030", linewidths=0.8)
            if v == 0:
                label = f"{row['PatientID']} {row.get('segment_label') or ''}".strip()
                ax.set_title(label + (" BORDER" if row["at_border"] else ""), fontsize=6, loc="left",
                             color="red" if row["at_border"] else "black")
            ax.text(1, 3, name[0].upper(), color="yellow", fontsize=5, va="top")
    more = f" (first {n} of {len(rows)})" if len(rows) > n else ""
    fig.suptitle(f"{title}: {len(rows)} patches{more}; axial/coronal/sagittal, lung window, mask outline in red",
                 fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
