"""Benchmark: FMCIB embedding throughput on the CPU, against the machine's matmul peak and FMCIB's own package.

What is measured, on the CPU with 2 threads (``torch.set_num_threads(2)``):

1. radassets' extraction path for the ``fmcib`` model: ``TorchExtractor.embed`` (the hot loop of
   ``run_embeddings``: ``model_input`` on each patch, then one forward under ``inference_mode``; on the
   CPU the fast path: conv-BatchNorm pairs folded at load, channels-last weights and input; ``--eager``
   also times the plain eager path, ``TorchExtractor(fast=False)``, in the same rounds)
   with the real FMCIB architecture, ``families.build("fmcib_resnet50")`` (MONAI ResNet-50, one
   input channel, widen factor 2, first convolution with stride 2, 4096-d output), at batch 1, 8
   and 32. Inputs: synthetic but realistic 64^3 int16 HU patches (lung at -850 HU with a soft-tissue
   nodule and noise, fixed seed); the model's input is their central 50^3, scaled (HU + 1024) / 3072
   (``model_input`` with the registry entry's preprocessing). For each batch size: one warm-up
   batch per path, not counted, then ``--repeats`` (default 3) rounds of [one matmul, one batch of
   each path]; the best batch counts (the machine is shared: the minimum is the run least disturbed by
   other work), the median is shown.
   Weights: the published FMCIB weights cannot be downloaded here, so the network is randomly
   initialised (fixed seed); the FLOPs and the speed do not depend on the weights' values.
2. Efficiency: FLOPs per patch are counted with ``torch.utils.flop_counter.FlopCounterMode`` on one
   forward of a (1, 1, 50, 50, 50) input (a multiply-add counts 2 FLOPs; convolutions and the
   matrix products, not batch norm, ReLU or pooling). Achieved GFLOP/s = FLOPs per patch x
   patches/s / 1e9, reported as a fraction of the GFLOP/s of a large float32 matmul (4096 x 4096
   @ 4096 x 4096, 2 n^3 FLOPs) with the same 2 threads, timed once before every round (interleaved
   with the model's batches) and once at the end; the best is the reference. The same ratio is also
   given per CPU-second of the process (``time.process_time``, both threads): other work on the
   machine stretches wall time much more than CPU time, so that figure moves less between runs.
   Then, unless ``--no-profile``, the fast path is cut into its stages (conv1 + bn + relu, maxpool,
   layer1-4, avgpool), each folded and channels-last like the whole, and each stage's FLOPs, best
   time at batch 8 and GFLOP/s against the matmul are printed: where the remaining time goes.
3. The ``foundation-cancer-image-biomarker`` package (``fmcib``), when a virtualenv with it is
   available (``--fmcib-python``; default ``var/bench/fmcib_venv/bin/python`` if it exists): its own
   extraction path on the same patches, run by that environment's Python in a subprocess
   (this same file with ``--fmcib-worker``). The patches are written as NRRD files (1 mm,
   LPS, the seed in a CSV as FMCIB expects), and the loop of ``fmcib.run.get_features`` is timed:
   ``fmcib.preprocessing.get_dataloader`` (its ``get_transforms``: ITKReader, Spacingd,
   Orientationd, ``SeedBasedPatchCropd``, ...; ``num_workers=0`` to stay at 2 threads) and its model,
   ``LoadModel(trunk=resnet50(...))`` given a weights file, called as ``get_features`` does (with
   autograd on). The weights file holds radassets' random weights (``{"trunk_state_dict": ...}``,
   the layout of FMCIB's published file), so nothing is downloaded. Sanity check, not timed:
   ``get_features`` itself is run on 2 patches, and both its input tensors and its embeddings are
   compared with radassets' (same input, same vector: the same computation). The seed is put at
   index 32.25 of the 64^3 patch so that FMCIB's int() truncation takes the same 50^3 crop as
   radassets (voxels 7 to 56); reading a 64^3 file per seed is all FMCIB's loader does here (on a
   real CT it re-reads and resamples the whole volume per seed: ``bench/imaging.py`` measures that).
   Reported: patches/s of both and the ratio radassets / fmcib package (> 1: radassets is faster).
   A missing or broken environment is skipped with one line saying why; the benchmark never fails
   for it, and never installs anything itself.

Run it:

    .venv/bin/python bench/embeddings.py                          # 3-4 minutes on 2 cores
    .venv/bin/python bench/embeddings.py --batches 1,8 --repeats 2 --json out.json
    .venv/bin/python bench/embeddings.py --batches 8 --eager --no-fmcib    # fast vs plain eager path, one run
    .venv/bin/python bench/embeddings.py --no-fmcib               # radassets and matmul only

The FMCIB environment (separate from the project's, its pins clash with radassets'):

    python3 -m venv var/bench/fmcib_venv
    var/bench/fmcib_venv/bin/pip install --default-timeout=120 torch==2.13.0 foundation-cancer-image-biomarker

Where pip finds only the CPU build of torch (as on a machine with the PyTorch index unreachable), it
pairs it with PyPI's torchvision, a CUDA build that cannot load without CUDA's libraries
(``libc10_cuda.so``). ``fmcib`` uses torchvision for one thing on this path, ``transforms.Lambda``
at the end of ``get_transforms``; the worker then puts an equivalent class in its place (a call of
the given function) and says so in the output. Installing ``torchvision==0.28.0+cpu`` from
https://download.pytorch.org/whl/cpu into that venv avoids it.

Every file goes to a temporary folder, removed at the end. Timings belong here, not in the tests.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

# bench/ is sys.path[0] when run as a script.
from peer import PeerUnavailable, PeerWorker, check_python, error_reply, reply_channel

REPO = Path(__file__).resolve().parents[1]

# Heavy imports (numpy, torch, radassets) happen inside the functions: the same file runs as the
# worker in FMCIB's own environment, which has neither radassets nor its dependencies.

THREADS = 2
PATCH_SIZE = 64
INPUT_SIZE = 50
BATCHES = (1, 8, 32)
N_PATCHES = 32  # distinct patches, used in a cycle
MAX_PATCHES = 256  # per batch size and path, warm-up included: a bound, rarely reached
CHECK_PATCHES = 2  # run through fmcib's get_features end to end for the sanity check
SEED = 20240501
MATMUL_N = 4096
REPEATS = 3  # timed batches per batch size and path; the best counts
PROFILE_BATCH = 8
PROFILE_REPEATS = 2
SEED_INDEX = 32.25  # FMCIB: int(32.25) = 32, crop [32 - 25, 32 + 25) = radassets' central 50^3
DEFAULT_FMCIB_PYTHON = Path(__file__).resolve().parents[1] / "var" / "bench" / "fmcib_venv" / "bin" / "python"
WORKER_TAG = "FMCIB-WORKER "
FMCIB_VENV_HELP = ("python3 -m venv var/bench/fmcib_venv && var/bench/fmcib_venv/bin/pip install torch==2.13.0 "
                   "foundation-cancer-image-biomarker")


# --------------------------------------------------------------------------------------------
# Inputs and references


def make_patches(n: int, seed: int = SEED):
    """``n`` 64^3 int16 HU patches [S, P, L]: lung parenchyma (-850 HU, mottled), a soft-tissue
    nodule (~40 HU, radius 4-14 mm, soft edge, near the centre), a vessel, CT-like noise."""
    import numpy as np
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    grid = np.indices((PATCH_SIZE,) * 3, dtype=np.float32) - (PATCH_SIZE - 1) / 2
    out = np.empty((n, PATCH_SIZE, PATCH_SIZE, PATCH_SIZE), dtype=np.int16)
    for i in range(n):
        hu = -850 + 40 * gaussian_filter(rng.standard_normal(grid.shape[1:]).astype(np.float32), 2.0) * 3
        centre = rng.uniform(-3, 3, size=3).reshape(3, 1, 1, 1)
        radius = rng.uniform(4, 14)
        distance = np.sqrt(((grid - centre) ** 2).sum(axis=0))
        nodule = 1 / (1 + np.exp((distance - radius) / 0.8))  # soft edge, ~1 mm
        hu = hu * (1 - nodule) + 40 * nodule
        # a vessel: a tube of blood (~40 HU) along a random direction, off-centre
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        offset = rng.uniform(-20, 20, size=3).reshape(3, 1, 1, 1)
        rel = grid - offset
        along = np.tensordot(direction, rel, axes=1)
        across = np.sqrt(np.maximum((rel ** 2).sum(axis=0) - along ** 2, 0))
        vessel = 1 / (1 + np.exp((across - rng.uniform(1.5, 3)) / 0.6))
        hu = hu * (1 - vessel) + 40 * vessel
        hu += rng.normal(0, 20, size=hu.shape)  # quantum noise
        out[i] = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    return out


class Matmul:
    """The reference: an n x n @ n x n float32 matmul (2 n^3 FLOPs), timed once per call, between the model's
    batches, so that both see the same load on the machine; the run's best call is the reference."""

    def __init__(self, n: int = MATMUL_N):
        import torch

        g = torch.Generator().manual_seed(SEED)
        self.n = n
        self.a, self.b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
        self.c = torch.empty(n, n)
        torch.mm(self.a, self.b, out=self.c)  # warm-up
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def time(self) -> None:
        import torch

        _, wall, cpu = timed(torch.mm, self.a, self.b, out=self.c)
        self.wall.append(wall)
        self.cpu.append(cpu)

    def gflops(self) -> float:
        return 2 * self.n ** 3 / min(self.wall) / 1e9

    def gflops_per_cpu_s(self) -> float:
        return 2 * self.n ** 3 / min(self.cpu) / 1e9


def timed(call, *args, **kwargs):
    """(result, wall seconds, CPU seconds) of one call. CPU is the process's time on the cores, both threads together: other work
    on the machine stretches the wall time, barely the CPU time, so its ratio is the load-robust one."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = call(*args, **kwargs)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def count_flops(module) -> int:
    """FLOPs of one forward of a (1, 1, 50, 50, 50) input (multiply-add = 2)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        module(torch.zeros(1, 1, INPUT_SIZE, INPUT_SIZE, INPUT_SIZE))
    return int(counter.get_total_flops())


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


# --------------------------------------------------------------------------------------------
# radassets


def time_radassets(extractors: dict, patches, batch: int, repeats: int, matmul: Matmul) -> dict[str, dict]:
    """Per path: one warm-up batch, then ``repeats`` rounds of [matmul, then one batch of each path] (patches
    taken in a cycle); the best (and median) batch of each path."""
    import numpy as np

    n = len(patches)
    masks = np.zeros((batch, 1, 1, 1), dtype=np.uint8)  # TorchExtractor does not read masks
    rows = [{} for _ in range(batch)]

    def batch_at(k: int):
        return patches[[(k * batch + i) % n for i in range(batch)]]

    for extractor in extractors.values():
        extractor.embed(batch_at(0), masks, rows)  # warm-up, not counted
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in extractors}
    for k in range(1, repeats + 1):
        matmul.time()
        for name, extractor in extractors.items():
            vectors, wall, cpu = timed(extractor.embed, batch_at(k), masks, rows)
            times[name].append((wall, cpu))
            assert vectors.shape == (batch, extractor.dim)
    matmul.time()
    out = {}
    for name, t in times.items():
        wall = sorted(w for w, _ in t)
        out[name] = {"batches": len(t), "best_s": wall[0], "median_s": float(np.median(wall)),
                     "best_cpu_s": min(c for _, c in t), "patches_per_s": batch / wall[0],
                     "patches_per_s_median": batch / float(np.median(wall))}
    return out


def fmcib_stages(module) -> list:
    """FMCIB's forward (MONAI ResNet: conv1, bn1, act, maxpool, layer1-4, avgpool) as the fast path runs it,
    cut into stages that can be timed one by one: each stage folded (conv-BatchNorm) and channels-last (and
    prepacked by ``profile_stages``)."""
    import torch

    from radassets.models.extractors import prepare_for_cpu

    stages = [("conv1 (7^3, 1 -> 128, stride 2) + bn + relu",
               torch.nn.Sequential(module.conv1, module.bn1, module.act)), ("maxpool", module.maxpool)]
    stages += [(f"layer{i}", getattr(module, f"layer{i}")) for i in range(1, 5)]
    stages += [("avgpool", module.avgpool)]
    return [(name, prepare_for_cpu(stage.eval())) for name, stage in stages]


def profile_stages(stages: list, x, repeats: int) -> list[dict]:
    """Each stage's FLOPs (one patch), shape and best wall/CPU seconds at this batch, ``repeats`` runs of the chain."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from radassets.models.extractors import prepack_convolutions

    rows = [{"stage": name, "flops": 0, "best_s": float("inf"), "best_cpu_s": float("inf")} for name, _ in stages]
    with torch.inference_mode():
        y = x[:1]
        for row, (_, stage) in zip(rows, stages):
            counter = FlopCounterMode(display=False)
            with counter:
                y = stage(y)
            row["flops"] = int(counter.get_total_flops())
            row["out_shape"] = list(y.shape[1:])
        y = x
        for _, stage in stages:  # warm-up at this batch, and the convolutions prepacked as the extractor does
            y = prepack_convolutions(stage, y)
        for _ in range(repeats):
            y = x
            for row, (_, stage) in zip(rows, stages):
                y, wall, cpu = timed(stage, y)
                row["best_s"], row["best_cpu_s"] = min(row["best_s"], wall), min(row["best_cpu_s"], cpu)
    return rows


# --------------------------------------------------------------------------------------------
# FMCIB's own package, in its environment


FmcibUnavailable = PeerUnavailable  # the peer environment is missing or cannot run


def write_fmcib_inputs(patches, work: Path, rows: int) -> None:
    """Each patch as a 1 mm NRRD (LPS, origin 0: voxel (i, j, k) at LPS (i, j, k) mm), and CSVs of
    seeds in FMCIB's format (image_path, coordX, coordY, coordZ in LPS mm)."""
    import SimpleITK as sitk

    paths = []
    for i, patch in enumerate(patches):
        image = sitk.GetImageFromArray(patch)  # [S, P, L] array -> x = L, y = P, z = S
        image.SetSpacing((1.0, 1.0, 1.0))
        image.SetOrigin((0.0, 0.0, 0.0))
        path = work / f"patch_{i:03d}.nrrd"
        sitk.WriteImage(image, str(path), False)
        paths.append(path)

    def csv(name: str, n: int) -> None:
        lines = ["image_path,coordX,coordY,coordZ"]
        lines += [f"{paths[i % len(paths)]},{SEED_INDEX},{SEED_INDEX},{SEED_INDEX}" for i in range(n)]
        (work / name).write_text("\n".join(lines) + "\n")

    csv("all.csv", rows)
    csv("check.csv", CHECK_PATCHES)


def check_fmcib_python(path: Path) -> None:
    """Raise FmcibUnavailable unless ``path`` is a Python that can import fmcib (import only, quick)."""
    check_python(path, ["fmcib"], "pip install foundation-cancer-image-biomarker", FMCIB_VENV_HELP)


def fmcib_worker(work: Path) -> int:
    """Runs in FMCIB's environment: its get_features path, timed per batch size on request."""
    send = reply_channel(WORKER_TAG)
    try:
        started = time.perf_counter()
        import numpy as np
        import torch

        torch.set_num_threads(THREADS)
        notes = []
        try:
            import torchvision  # noqa: F401  (fmcib.preprocessing imports it)
        except Exception as e:  # noqa: BLE001 - e.g. PyPI's CUDA torchvision next to a CPU-only torch
            import types

            for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
                del sys.modules[name]

            class Lambda:  # torchvision.transforms.Lambda: call the function given
                def __init__(self, lambd):
                    if not callable(lambd):
                        raise TypeError(f"Argument lambd should be callable, got {type(lambd).__name__!r}")
                    self.lambd = lambd

                def __call__(self, img):
                    return self.lambd(img)

            shim, transforms = types.ModuleType("torchvision"), types.ModuleType("torchvision.transforms")
            transforms.Lambda = Lambda
            shim.transforms = transforms
            shim.__version__ = "shim"
            sys.modules.update({"torchvision": shim, "torchvision.transforms": transforms})
            notes.append(f"torchvision does not import there ({type(e).__name__}: {str(e).splitlines()[-1]}); "
                         f"its one use on this path, transforms.Lambda, replaced by an equivalent class")
        from importlib.metadata import version

        import monai
        from monai.networks.nets import resnet50

        from fmcib.models import LoadModel
        from fmcib.preprocessing import get_dataloader, get_transforms
        from fmcib.run import get_features

        weights = str(work / "weights.torch")
        size = (INPUT_SIZE,) * 3
        import_s = time.perf_counter() - started

        # Sanity check (not timed): get_features end to end, and its input tensors.
        frame = get_features(str(work / "check.csv"), weights_path=weights, spatial_size=size,
                             batch_size=CHECK_PATCHES, num_workers=0)
        np.save(work / "fmcib_check_vectors.npy",
                frame[[f"pred_{i}" for i in range(4096)]].to_numpy(dtype=np.float32))
        dataset = monai.data.CSVDataset(str(work / "check.csv"), transform=get_transforms(spatial_size=size))
        np.save(work / "fmcib_check_inputs.npy", np.stack([np.asarray(dataset[i]) for i in range(len(dataset))]))

        # The model as get_features builds it when given a weights file.
        device = "cuda" if torch.cuda.is_available() else "cpu"
        trunk = resnet50(pretrained=False, n_input_channels=1, widen_factor=2, conv1_t_stride=2,
                         feed_forward=False, bias_downsample=True)
        model = LoadModel(trunk=trunk, weights_path=weights).to(device)
        model.eval()
        send({"ready": True, "import_s": import_s, "setup_s": time.perf_counter() - started, "notes": notes,
              "versions": {p: version(p) for p in ("foundation-cancer-image-biomarker", "torch", "monai", "itk")},
              "torch_threads": torch.get_num_threads()})

        for line in sys.stdin:
            message = json.loads(line)
            if message.get("quit"):
                break
            batch, min_seconds = int(message["batch"]), float(message["seconds"])
            loader = get_dataloader(str(work / "all.csv"), batch_size=batch, num_workers=0, spatial_size=size)
            batches = iter(loader)
            model(next(batches).to(device)).detach().cpu().numpy()  # warm-up, not counted
            done, k, begun = 0, 0, time.perf_counter()
            for x in batches:  # get_features' loop body
                feature = model(x.to(device)).detach().cpu().numpy()
                assert feature.shape == (len(x), 4096)
                done += len(x)
                k += 1
                seconds = time.perf_counter() - begun
                if seconds >= min_seconds:
                    break
            send({"batch": batch, "patches": done, "batches": k, "seconds": seconds,
                  "patches_per_s": done / seconds})
        return 0
    except Exception as e:  # noqa: BLE001 - any failure goes to the parent process
        traceback.print_exc()
        send(error_reply(e))
        return 1


def fmcib_sanity(extractor, patches, work: Path) -> dict:
    """radassets' inputs and vectors against fmcib's get_features on the first patches."""
    import numpy as np

    from radassets.models.preprocessing import model_input

    ours_in = np.stack([model_input(p, extractor.entry.preprocessing) for p in patches[:CHECK_PATCHES]])
    ours = extractor.embed(patches[:CHECK_PATCHES], np.zeros((CHECK_PATCHES, 1, 1, 1), np.uint8),
                           [{} for _ in range(CHECK_PATCHES)])
    theirs_in = np.load(work / "fmcib_check_inputs.npy")
    theirs = np.load(work / "fmcib_check_vectors.npy")
    same_shape = ours_in.shape == theirs_in.shape and ours.shape == theirs.shape
    return {"input_shapes": [list(ours_in.shape), list(theirs_in.shape)],
            "input_max_abs_diff": float(np.abs(ours_in - theirs_in).max()) if same_shape else None,
            "vector_max_rel_diff": float(np.abs(ours - theirs).max() / np.abs(ours).max()) if same_shape else None}


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)),
                        help="comma-separated batch sizes (default 1,8,32)")
    parser.add_argument("--repeats", type=int, default=REPEATS,
                        help=f"timed batches per batch size and radassets path, each after a matmul; the best "
                             f"counts (default {REPEATS})")
    parser.add_argument("--seconds", type=float, default=8.0,
                        help="fmcib package: minimum timed seconds per batch size, after one warm-up batch (default 8)")
    parser.add_argument("--eager", action="store_true",
                        help="also time the plain eager path (TorchExtractor(fast=False), the path before issue 18)")
    parser.add_argument("--no-profile", action="store_true",
                        help="skip the per-stage split (conv1 ... layer4) of the fast path at batch 8")
    parser.add_argument("--fmcib-python", type=Path, default=None,
                        help=f"Python of an environment with the fmcib package (default {DEFAULT_FMCIB_PYTHON} "
                             f"if it exists; see the module docstring to create it)")
    parser.add_argument("--no-fmcib", action="store_true", help="skip the fmcib package comparison")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--fmcib-worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fmcib_worker is not None:
        return fmcib_worker(args.fmcib_worker)
    try:
        batches = [int(b) for b in args.batches.split(",") if b.strip()]
    except ValueError:
        parser.error("--batches must be comma-separated integers")
    if not batches or min(batches) < 1 or max(batches) > MAX_PATCHES // 2:
        parser.error(f"--batches must be between 1 and {MAX_PATCHES // 2}")
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    if str(REPO) not in sys.path:  # run as a script from anywhere, with or without an installed package
        sys.path.insert(0, str(REPO))
    wall = time.perf_counter()
    import torch

    torch.set_num_threads(THREADS)
    from radassets.models import families, registry
    from radassets.models.extractors import TorchExtractor

    entry = registry.get("fmcib")

    def plain_module():
        torch.manual_seed(SEED)
        return families.build(entry.family).eval()

    module = plain_module()
    flops = count_flops(module)
    # as published (the fmcib package loads it): taken before the fast path folds the BatchNorms
    trunk_state = None if args.no_fmcib else {k: v.clone() for k, v in module.state_dict().items()}
    stages = None if args.no_profile else fmcib_stages(copy.deepcopy(module))
    started = time.perf_counter()
    extractor = TorchExtractor(entry, module, None, torch.device("cpu"))  # the fast path (BN folded, channels-last)
    prepare_s = time.perf_counter() - started
    extractors = {"radassets": extractor}
    if args.eager:
        extractors["radassets eager"] = TorchExtractor(entry, plain_module(), None, torch.device("cpu"), fast=False)
    patches = make_patches(N_PATCHES)

    # The fmcib environment: checked, started and its sanity run done before anything is timed,
    # so that it never competes with a measurement for the 2 cores.
    fmcib_python = None if args.no_fmcib else (args.fmcib_python or
                                               (DEFAULT_FMCIB_PYTHON if DEFAULT_FMCIB_PYTHON.is_file() else None))
    fmcib_status, fmcib_info, sanity, worker = None, None, None, None
    if args.no_fmcib:
        fmcib_status = "fmcib package: skipped (--no-fmcib)"
    elif fmcib_python is None:
        fmcib_status = (f"fmcib package: not measured: no environment at {DEFAULT_FMCIB_PYTHON} and no "
                        f"--fmcib-python given (create it with: {FMCIB_VENV_HELP})")
    tmp = tempfile.TemporaryDirectory(prefix="radassets-bench-emb-")
    work = Path(tmp.name)
    try:
        if fmcib_python is not None:
            try:
                check_fmcib_python(fmcib_python)
                write_fmcib_inputs(patches, work, MAX_PATCHES)
                torch.save({"trunk_state_dict": trunk_state}, work / "weights.torch")
                print(f"fmcib package: starting its environment ({fmcib_python}) ...", flush=True)
                worker = PeerWorker(fmcib_python, Path(__file__), "--fmcib-worker", str(work), work, WORKER_TAG,
                                    {"WANDB_MODE": "disabled"})
                fmcib_info = worker.receive()
                (work / "weights.torch").unlink()  # 0.7 GB, loaded by now
                sanity = fmcib_sanity(extractor, patches, work)
            except (FmcibUnavailable, OSError, subprocess.SubprocessError) as e:
                fmcib_status = f"fmcib package: not measured: {e}"
                if worker:
                    worker.close()
                worker = None

        load = os.getloadavg()
        print(f"timing on {cpu_name()}, {THREADS} threads ...", flush=True)
        matmul = Matmul()
        results = []
        for batch in batches:
            for path, r in time_radassets(extractors, patches, batch, args.repeats, matmul).items():
                results.append({"path": path, "batch": batch, **r})
                print(f"  {path:<15} batch {batch:>3}: {r['patches_per_s']:.2f} patches/s (best of {r['batches']}), "
                      f"{r['patches_per_s_median']:.2f} (median)", flush=True)
            if worker is not None:
                try:
                    r = worker.request({"batch": batch, "seconds": args.seconds})
                    results.append({"path": "fmcib_package", **r})
                    print(f"  fmcib package   batch {batch:>3}: {r['patches_per_s']:.2f} patches/s", flush=True)
                except (FmcibUnavailable, OSError) as e:
                    fmcib_status = f"fmcib package: failed during timing, skipped: {e}"
                    worker.close()
                    worker = None
        profile = None
        if stages is not None:
            print(f"  per-stage split at batch {PROFILE_BATCH} ...", flush=True)
            x = extractor.batch_input(patches[:PROFILE_BATCH])
            matmul.time()
            profile = profile_stages(stages, x, PROFILE_REPEATS)
            matmul.time()
            del stages
    finally:
        if worker is not None:
            worker.close()
        tmp.cleanup()
    total = time.perf_counter() - wall

    peak, peak_cpu = matmul.gflops(), matmul.gflops_per_cpu_s()
    for r in results:
        r["gflops"] = flops * r["patches_per_s"] / 1e9
        r["of_matmul"] = r["gflops"] / peak
        if "best_cpu_s" in r:
            r["of_matmul_cpu"] = flops * r["batch"] / r["best_cpu_s"] / 1e9 / peak_cpu

    print(f"\nEMBEDDINGS  fmcib: {entry.family} (MONAI ResNet-50, widen 2, conv1 stride 2), {entry.embedding_dim}-d; "
          f"input 1x{INPUT_SIZE}^3 cropped from {N_PATCHES} synthetic {PATCH_SIZE}^3 int16 HU patches")
    print(f"CPU: {cpu_name()} ({os.cpu_count()} cores, load average {load[0]:.2f} before timing: other work "
          f"on the machine slows both paths), torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"each batch size: 1 warm-up batch per path, not counted, then {args.repeats} rounds of [matmul, one batch "
          f"of each radassets path]; the best batch counts (median shown); the fmcib package: >= {args.seconds:g} s "
          f"timed after one warm-up batch, the mean")
    print(f"fast path prepared (conv-BatchNorm folded, channels-last) in {prepare_s:.2f} s at load, its convolutions "
          f"prepacked during its first batch")
    print("weights: random initialisation (the published FMCIB weights cannot be downloaded here); "
          "FLOPs and speed are the same as with them")
    print(f"FLOPs per patch: {flops / 1e9:.2f} GFLOP (FlopCounterMode; multiply-add = 2; convolutions and matmuls)")
    print(f"matmul reference: {MATMUL_N}x{MATMUL_N} float32 @ {MATMUL_N}x{MATMUL_N}, once before each round, best of "
          f"{len(matmul.wall)}: {peak:.1f} GFLOP/s (median {2 * MATMUL_N ** 3 / statistics.median(matmul.wall) / 1e9:.1f}); "
          f"per CPU-second of both threads: {peak_cpu:.1f}")
    print(f"{'path':<16} {'batch':>5} {'patches/s':>10} {'median':>7} {'GFLOP/s':>8} {'of matmul':>10} {'CPU-time':>9}")
    for r in results:
        median = f"{r['patches_per_s_median']:.2f}" if "patches_per_s_median" in r else "-"
        cpu = f"{r['of_matmul_cpu']:.2f}" if "of_matmul_cpu" in r else "-"
        print(f"{r['path']:<16} {r['batch']:>5} {r['patches_per_s']:>10.2f} {median:>7} {r['gflops']:>8.1f} "
              f"{r['of_matmul']:>10.2f} {cpu:>9}")
    print("radassets: TorchExtractor.embed (model_input per patch, forward under inference_mode) on the fast path: "
          "conv-BatchNorm folded at load, channels-last weights and input"
          + ("; radassets eager: TorchExtractor(fast=False), the plain path before" if args.eager else ""))
    print("fast path: convolutions prepacked at the first batch (the warm-up of the first batch size); "
          "of matmul: best batch's GFLOP/s / best matmul's (wall clock); CPU-time: the same per CPU-second of the "
          "process (both threads), which other work on the machine inflates far less")
    if profile:
        total_s = sum(row["best_s"] for row in profile)
        print(f"\nper stage, fast path, batch {PROFILE_BATCH}, best of {PROFILE_REPEATS} (wall; GFLOP/s per stage vs the "
              f"matmul's {peak:.1f}):")
        print(f"{'stage':<46} {'output':>18} {'GFLOP/patch':>11} {'seconds':>8} {'share':>6} {'GFLOP/s':>8} "
              f"{'of matmul':>9} {'CPU-time':>8}")
        for row in profile:
            rate = row["flops"] * PROFILE_BATCH / row["best_s"] / 1e9
            rate_cpu = row["flops"] * PROFILE_BATCH / row["best_cpu_s"] / 1e9
            row.update(share=row["best_s"] / total_s, gflops=rate, of_matmul=rate / peak,
                       of_matmul_cpu=rate_cpu / peak_cpu)
            print(f"{row['stage']:<46} {'x'.join(map(str, row['out_shape'])):>18} {row['flops'] / 1e9:>11.2f} "
                  f"{row['best_s']:>8.2f} {row['share']:>6.1%} {rate:>8.1f} {row['of_matmul']:>9.2f} "
                  f"{row['of_matmul_cpu']:>8.2f}")
    if fmcib_info is not None:
        v = fmcib_info["versions"]
        print(f"fmcib package: foundation-cancer-image-biomarker {v['foundation-cancer-image-biomarker']} "
              f"(torch {v['torch']}, monai {v['monai']}, itk {v['itk']}; its own environment, "
              f"{fmcib_info['torch_threads']} threads): the get_features loop, get_dataloader(num_workers=0) "
              f"reading one NRRD per seed + LoadModel forward with autograd on, as get_features runs it")
        for note in fmcib_info["notes"]:
            print(f"  note: {note}")
        if sanity:
            print(f"  sanity (get_features on {CHECK_PATCHES} patches, same random weights): input shapes "
                  f"{sanity['input_shapes'][1]} vs radassets {sanity['input_shapes'][0]}, max |d input| "
                  f"{sanity['input_max_abs_diff']:.2g}, max relative |d vector| {sanity['vector_max_rel_diff']:.2g}")
    if fmcib_status:
        print(fmcib_status)
    print(f"\ntotal {total:.1f} s")

    ratios = {}
    ours = {r["batch"]: r for r in results if r["path"] == "radassets"}
    theirs = {r["batch"]: r for r in results if r["path"] == "fmcib_package"}
    for batch in batches:
        ratios[f"fmcib batch {batch} achieved/matmul"] = ours[batch]["of_matmul"]
    for batch in batches:
        ratios[f"fmcib batch {batch} achieved/matmul CPU-time"] = ours[batch]["of_matmul_cpu"]
    eager = {r["batch"]: r for r in results if r["path"] == "radassets eager"}
    for batch in sorted(eager):
        ratios[f"fmcib batch {batch} eager achieved/matmul"] = eager[batch]["of_matmul"]
        ratios[f"fmcib batch {batch} fast/eager"] = ours[batch]["patches_per_s"] / eager[batch]["patches_per_s"]
    for batch in batches:
        if batch in theirs:
            speedup = ours[batch]["patches_per_s_median"] / theirs[batch]["patches_per_s"]  # typical vs mean
            ratios[f"radassets/fmcib_package batch {batch}"] = speedup
    for name, value in ratios.items():
        print(f"RATIO {name} = {value:.2f}")

    if args.json:
        args.json.write_text(json.dumps({
            "threads": THREADS, "cpu": cpu_name(), "load_average_before": load[0], "torch": torch.__version__,
            "model": entry.name, "family": entry.family, "weights": "random initialisation", "flops_per_patch": flops,
            "matmul_gflops": {"reference": peak, "per_cpu_s": peak_cpu, "seconds": matmul.wall},
            "prepare_s": prepare_s, "profile": profile,
            "results": results, "fmcib_package": fmcib_info, "fmcib_status": fmcib_status, "sanity": sanity,
            "ratios": ratios, "total_s": total}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
