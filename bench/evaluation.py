"""Benchmark: the kNN evaluation of one partition, radassets' exact k search against Optuna's tuning.

What is compared: the kNN protocol of TumorImagingBench on the embeddings of one partition (one
model's embeddings on one dataset version, one endpoint), timed as a whole, on the CPU with 2
threads, on the same embeddings and the same splits:

1. radassets: ``radassets.evaluation.probes.knn_protocol(x, y)``: 10 stratified splits (seeds
   0..9; integer sizes test = round(0.3 n), validation = round(0.2 n), two ``train_test_split``
   calls), cosine kNN; per split ONE neighbour ranking (scikit-learn's brute-force cosine
   ``NearestNeighbors``) of the training patients for every validation patient gives the
   validation AUC of every k in 1..min(50, n_train) at once; the best k (ties: the smallest) is
   refitted for the test AUC.
2. The TumorImagingBench approach (``notebooks/modelling/modelling_utils.py``,
   ``train_knn_classifier`` and ``evaluate_model``): per split, an Optuna study (direction
   "maximize") over the integer k in [1, min(50, n_train)] whose objective fits
   ``KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute")`` on the training part
   and returns the validation AUC (``roc_auc_score`` of ``predict_proba[:, 1]``); then the best k
   is refitted and gives the test AUC. Same seeds, same integer sizes, same ``train_test_split``
   calls as radassets. Samplers, each its own timed peer (the first two by default):
   - ``grid``: ``GridSampler({"k": [1..kk]}, seed=split seed)`` with kk trials, i.e. every k once,
     in a random order: what TumorImagingBench's code runs (there ``algorithm`` is left at "auto",
     which is brute force for the cosine metric, and the grid is 1..50). Slower than ``tpe-all``
     for the same trials: after each trial Optuna's GridSampler compares every finished trial with
     every grid point to find the unvisited ones (``_get_unvisited_grid_ids``), O(trials x grid);
   - ``tpe-all``: ``TPESampler(seed=split seed)`` with every k in 1..kk enqueued first
     (``study.enqueue_trial``, increasing k) and kk trials: a TPE study made exhaustive. TPE alone
     is not: with 50 trials over the 50 values of k it draws some k several times and never tries
     others, and on these data it missed the best validation AUC in 1 split of 10 in each
     partition (so another k and another test AUC); enqueueing every k is what makes the test
     AUCs identical;
   - ``tpe`` (only if asked, ``--samplers``): plain ``TPESampler(seed=split seed)``, ``--trials``
     trials (default 50), nothing enqueued; whether it reached the exact best validation AUC is
     printed, and its test AUCs are checked like the others' (and usually differ somewhere).
   Tie-breaking, matched on purpose: Optuna's ``study.best_params`` is the first trial in trial
   order with the best value, and trial order is random here, whereas radassets takes the
   smallest k among equal validation AUCs. The peer therefore refits the smallest k among the
   completed trials whose value equals ``study.best_value`` exactly (a loop over at most 50 trials,
   inside the timed region). How often Optuna's own ``best_params`` differed, and whether its
   test AUC would have differed, is measured after the timing and printed.
   The peer runs in its own virtualenv (Optuna is not a radassets dependency), in a subprocess:
   this same file with ``--optuna-worker``, given the embeddings in a temporary .npz file and
   asked for one run at a time over JSON lines, so that the paths alternate and never run at the
   same time. Its time is measured inside the worker: interpreter start-up, imports and loading
   the .npz are not counted.

Check: per split, the chosen k, the validation AUC and the test AUC of each peer against
radassets'; the maximum |difference| of the test AUCs is printed and must be exactly 0 (a
difference is printed in capitals as NOT IDENTICAL).

Data: synthetic embeddings with a planted signal (fixed seed), float32 as an extractor writes
them, given as-is to both paths: non-negative like pooled post-ReLU features (a shared offset, a
32-d latent structure, noise, clipped at 0); the label (40 % positive) shifts one latent
direction, which gives a mean kNN test AUC of about 0.8. Default partitions: 422 x 4096 (LUNG1's
patients x FMCIB's dimension) and 134 x 512.

Timing: per partition and path, one untimed warm-up (for the peer: one short study), then
``--repeats`` (default 3) timed runs of the whole protocol per path, the paths alternating run by
run (radassets, then each peer, then again), so that a load spike from other work on the machine
hits them alike; the median is reported (and the minimum), and RATIO peer / radassets is of the
medians (> 1: radassets is faster). A timed run of radassets is the median of 5 back-to-back runs:
it lasts a tenth of a second, so a single hiccup of the machine would double it.

Run it:

    .venv/bin/python bench/evaluation.py                    # 2-4 minutes on 2 cores, with load
    .venv/bin/python bench/evaluation.py --partitions 422x4096 --samplers grid --repeats 5 --json out.json
    .venv/bin/python bench/evaluation.py --no-optuna        # radassets only

The Optuna environment (separate from the project's; the same scikit-learn and numpy versions are
best, so that both paths compute the same floats; the output shows both):

    python3 -m venv var/bench/optuna_venv
    var/bench/optuna_venv/bin/pip install optuna scikit-learn numpy

A missing or broken environment is skipped with one line saying why; the benchmark never fails
for it, and never installs anything itself. The .npz goes to a temporary folder, removed at the
end. Timings belong here, not in the tests.
"""

from __future__ import annotations

import argparse
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

# Heavy imports (numpy, scikit-learn, optuna, radassets) happen inside the functions: the same file
# runs as the worker in Optuna's own environment, which has no radassets.

THREADS = 2
SEED = 20240601
PARTITIONS = ((422, 4096), (134, 512))  # LUNG1 patients x FMCIB's dimension; a smaller cohort x 512
POSITIVE_FRACTION = 0.4
LATENT = 32
SIGNAL = 0.9  # shift of the planted latent direction, in units of its SD (positives +, negatives -)
K_MAX = 50  # radassets.evaluation.probes.K_MAX; checked against it at run time
N_SPLITS = 10
TRIALS = 50
SAMPLERS = ("grid", "tpe-all", "tpe")
DEFAULT_SAMPLERS = ("grid", "tpe-all")  # the exhaustive ones: same best validation AUC as the exact search
REPEATS = 3
DEFAULT_OPTUNA_PYTHON = Path(__file__).resolve().parents[1] / "var" / "bench" / "optuna_venv" / "bin" / "python"
WORKER_TAG = "OPTUNA-WORKER "
OPTUNA_VENV_HELP = ("python3 -m venv var/bench/optuna_venv && var/bench/optuna_venv/bin/pip install optuna "
                    "scikit-learn numpy")


# --------------------------------------------------------------------------------------------
# Inputs


def make_partition(n: int, d: int, seed: int):
    """(x float32 (n, d), y int64 (n,)): non-negative embeddings with a planted signal."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y = np.zeros(n, dtype=np.int64)
    y[rng.permutation(n)[:round(POSITIVE_FRACTION * n)]] = 1
    z = rng.standard_normal((n, LATENT))
    z[:, 0] += SIGNAL * (2 * y - 1)  # the planted signal: one latent direction
    w = rng.standard_normal((LATENT, d)) / np.sqrt(LATENT)
    x = 0.5 + 0.5 * z @ w + 0.6 * rng.standard_normal((n, d))
    return np.maximum(x, 0).astype(np.float32), y


def partition_name(n: int, d: int) -> str:
    return f"{n}x{d}"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def split_indices(y, seed: int):
    """The split of ``knn_protocol``: integer sizes, two stratified ``train_test_split`` calls."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    n_test, n_val = round(0.3 * len(y)), round(0.2 * len(y))
    train_val, test = train_test_split(np.arange(len(y)), test_size=n_test, stratify=y, random_state=seed)
    train, val = train_test_split(train_val, test_size=n_val, stratify=y[train_val], random_state=seed)
    return train, val, test


# --------------------------------------------------------------------------------------------
# The peer: TumorImagingBench's Optuna tuning, in Optuna's environment


def optuna_protocol(x, y, sampler_name: str, trials: int, n_splits: int = N_SPLITS, k_max: int = K_MAX) -> list[dict]:
    """Per split: an Optuna study over k, the best k (ties: the smallest) refitted, the test AUC."""
    import optuna
    from sklearn.metrics import roc_auc_score
    from sklearn.neighbors import KNeighborsClassifier

    splits = []
    for seed in range(n_splits):
        train, val, test = split_indices(y, seed)
        kk = min(k_max, len(train))
        x_train, y_train, x_val, y_val = x[train], y[train], x[val], y[val]

        def objective(trial, kk=kk, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val):
            k = trial.suggest_int("k", 1, kk)
            knn = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(x_train, y_train)
            return roc_auc_score(y_val, knn.predict_proba(x_val)[:, 1])

        if sampler_name == "grid":
            sampler, n_trials = optuna.samplers.GridSampler({"k": list(range(1, kk + 1))}, seed=seed), kk
        else:
            sampler, n_trials = optuna.samplers.TPESampler(seed=seed), (kk if sampler_name == "tpe-all" else trials)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        if sampler_name == "tpe-all":
            for k in range(1, kk + 1):  # every k, in increasing order, before TPE would sample
                study.enqueue_trial({"k": k})
        study.optimize(objective, n_trials=n_trials)
        best_value = study.best_value
        best_k = min(t.params["k"] for t in study.trials
                     if t.state == optuna.trial.TrialState.COMPLETE and t.value == best_value)
        knn = KNeighborsClassifier(n_neighbors=best_k, metric="cosine", algorithm="brute").fit(x_train, y_train)
        test_auc = roc_auc_score(y[test], knn.predict_proba(x[test])[:, 1])
        splits.append({"seed": seed, "k": int(best_k), "val_auc": float(best_value), "test_auc": float(test_auc),
                       "optuna_best_k": int(study.best_params["k"]), "trials": len(study.trials),
                       "distinct_k": len({t.params["k"] for t in study.trials})})
    return splits


def optuna_own_choice(x, y, splits: list[dict]) -> list[dict]:
    """Not timed: for splits where Optuna's ``best_params`` picked another k of equal validation AUC,
    the test AUC that k would have given."""
    from sklearn.metrics import roc_auc_score
    from sklearn.neighbors import KNeighborsClassifier

    out = []
    for s in splits:
        if s["optuna_best_k"] != s["k"]:
            train, _, test = split_indices(y, s["seed"])
            knn = KNeighborsClassifier(n_neighbors=s["optuna_best_k"], metric="cosine",
                                       algorithm="brute").fit(x[train], y[train])
            out.append({"seed": s["seed"], "k": s["optuna_best_k"],
                        "test_auc": float(roc_auc_score(y[test], knn.predict_proba(x[test])[:, 1]))})
    return out


OptunaUnavailable = PeerUnavailable  # the peer environment is missing or cannot run


def optuna_worker(data: Path) -> int:
    """Runs in Optuna's environment: on request, one timed run of ``optuna_protocol`` on one partition."""
    send = reply_channel(WORKER_TAG)
    try:
        started = time.perf_counter()
        import numpy as np
        import optuna
        import sklearn
        from threadpoolctl import threadpool_limits

        threadpool_limits(THREADS)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        arrays = np.load(data)
        partitions = {name[2:]: (arrays[name], arrays["y_" + name[2:]]) for name in arrays.files
                      if name.startswith("x_")}
        import_s = time.perf_counter() - started
        # Warm-up, not timed: the first fit, the first study of each sampler.
        x, y = next(iter(partitions.values()))
        for sampler_name in SAMPLERS:
            optuna_protocol(x, y, sampler_name, trials=3, n_splits=1, k_max=3)
        send({"ready": True, "import_s": import_s, "setup_s": time.perf_counter() - started,
              "versions": {"optuna": optuna.__version__, "scikit-learn": sklearn.__version__,
                           "numpy": np.__version__, "python": sys.version.split()[0]}})

        for line in sys.stdin:
            message = json.loads(line)
            if message.get("quit"):
                break
            x, y = partitions[message["partition"]]
            begun = time.perf_counter()
            splits = optuna_protocol(x, y, message["sampler"], int(message["trials"]))
            seconds = time.perf_counter() - begun
            own = optuna_own_choice(x, y, splits) if message.get("own_choice") else None  # not timed
            send({"partition": message["partition"], "sampler": message["sampler"], "seconds": seconds,
                  "splits": splits, "optuna_own_choice": own})
        return 0
    except Exception as e:  # noqa: BLE001 - any failure goes to the parent process
        traceback.print_exc()
        send(error_reply(e))
        return 1


def check_optuna_python(path: Path) -> None:
    """Raise OptunaUnavailable unless ``path`` is a Python that has optuna, scikit-learn and numpy."""
    check_python(path, ["optuna", "sklearn", "numpy", "threadpoolctl"], "pip install optuna scikit-learn numpy",
                 OPTUNA_VENV_HELP)


# --------------------------------------------------------------------------------------------
# radassets


RADASSETS_RUNS = 5  # runs of radassets per timed run, their median its time (see the module docstring)


def time_radassets(x, y) -> dict:
    """One timed run of ``knn_protocol``: the median of ``RADASSETS_RUNS`` back-to-back runs. It takes a tenth of a
    second, a peer's run seconds: one scheduling hiccup of another process would double a single run of ours and
    not move the peer's, so ours is timed as a short series (the same splits every run: it is deterministic)."""
    import statistics

    from radassets.evaluation.probes import knn_protocol

    seconds, splits = [], None
    for _ in range(RADASSETS_RUNS):
        begun = time.perf_counter()
        result = knn_protocol(x, y)
        seconds.append(time.perf_counter() - begun)
        assert splits is None or result.splits == splits, "knn_protocol is not deterministic"
        splits = result.splits
    return {"seconds": statistics.median(seconds), "splits": splits}


def add_run(store: dict, run: dict) -> None:
    """Accumulate one timed run: the seconds of every repeat, the splits of the first, and whether
    every repeat chose the same (the protocol is deterministic)."""
    if not store:
        store.update(seconds=[], splits=run["splits"], repeats_identical=True)
        if "optuna_own_choice" in run:
            store["optuna_own_choice"] = run["optuna_own_choice"]
    store["seconds"].append(run["seconds"])
    store["repeats_identical"] &= run["splits"] == store["splits"]


def compare(ours: list[dict], theirs: list[dict]) -> dict:
    """Per split: same k, same validation AUC, same test AUC?"""
    d_test = [abs(a["test_auc"] - b["test_auc"]) for a, b in zip(ours, theirs)]
    d_val = [abs(a["val_auc"] - b["val_auc"]) for a, b in zip(ours, theirs)]
    return {"max_abs_diff_test_auc": max(d_test), "max_abs_diff_val_auc": max(d_val),
            "test_auc_identical": all(a["test_auc"] == b["test_auc"] for a, b in zip(ours, theirs))
                                  and len(ours) == len(theirs),
            "same_k": sum(a["k"] == b["k"] for a, b in zip(ours, theirs)),
            "reached_best_val_auc": sum(b["val_auc"] == a["val_auc"] for a, b in zip(ours, theirs)),
            "optuna_best_params_differs": sum(b["optuna_best_k"] != b["k"] for b in theirs),
            "splits": len(ours)}


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--partitions", default=",".join(partition_name(n, d) for n, d in PARTITIONS),
                        help="comma-separated NxD sizes of synthetic partitions (default 422x4096,134x512)")
    parser.add_argument("--repeats", type=int, default=REPEATS,
                        help=f"timed runs of the whole protocol per partition and path (default {REPEATS})")
    parser.add_argument("--samplers", default=",".join(DEFAULT_SAMPLERS),
                        help=f"Optuna samplers among {', '.join(SAMPLERS)} (default {','.join(DEFAULT_SAMPLERS)}; "
                             f"plain tpe is not exhaustive and may pick another k)")
    parser.add_argument("--trials", type=int, default=TRIALS,
                        help=f"trials per split of the plain tpe sampler (default {TRIALS})")
    parser.add_argument("--optuna-python", type=Path, default=None,
                        help=f"Python of an environment with optuna and scikit-learn (default "
                             f"{DEFAULT_OPTUNA_PYTHON} if it exists; see the module docstring to create it)")
    parser.add_argument("--no-optuna", action="store_true", help="skip the Optuna comparison")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--optuna-worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.optuna_worker is not None:
        return optuna_worker(args.optuna_worker)
    try:
        sizes = [tuple(int(v) for v in p.lower().split("x")) for p in args.partitions.split(",") if p.strip()]
        if not sizes or any(len(s) != 2 or min(s) < 1 for s in sizes):
            raise ValueError
    except ValueError:
        parser.error("--partitions must be comma-separated NxD sizes, e.g. 422x4096,134x512")
    if min(n for n, _ in sizes) < 20:
        parser.error("each partition needs at least 20 patients (5 of the smaller class per validation part)")
    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    if not samplers or any(s not in SAMPLERS for s in samplers):
        parser.error(f"--samplers must be among {', '.join(SAMPLERS)}")
    if args.repeats < 1 or args.trials < 1:
        parser.error("--repeats and --trials must be at least 1")

    if str(REPO) not in sys.path:  # run as a script from anywhere, with or without an installed package
        sys.path.insert(0, str(REPO))
    wall = time.perf_counter()
    import numpy as np
    import sklearn
    from threadpoolctl import threadpool_limits

    from radassets.evaluation import probes

    threadpool_limits(THREADS)
    if probes.K_MAX != K_MAX or probes.N_SPLITS != N_SPLITS:
        raise SystemExit(f"radassets' protocol changed (K_MAX {probes.K_MAX}, N_SPLITS {probes.N_SPLITS}); "
                         f"update this benchmark's peer to match")
    data = {partition_name(n, d): make_partition(n, d, SEED + i) for i, (n, d) in enumerate(sizes)}

    optuna_python = None if args.no_optuna else (args.optuna_python or
                                                 (DEFAULT_OPTUNA_PYTHON if DEFAULT_OPTUNA_PYTHON.is_file() else None))
    optuna_status, optuna_info, worker = None, None, None
    if args.no_optuna:
        optuna_status = "optuna: skipped (--no-optuna)"
    elif optuna_python is None:
        optuna_status = (f"optuna: not measured: no environment at {DEFAULT_OPTUNA_PYTHON} and no --optuna-python "
                         f"given (create it with: {OPTUNA_VENV_HELP})")
    tmp = tempfile.TemporaryDirectory(prefix="radassets-bench-eval-")
    work = Path(tmp.name)
    results: dict[str, dict] = {name: {} for name in data}
    try:
        if optuna_python is not None:
            try:
                check_optuna_python(optuna_python)
                npz = work / "embeddings.npz"
                np.savez(npz, **{f"x_{k}": v[0] for k, v in data.items()}, **{f"y_{k}": v[1] for k, v in data.items()})
                print(f"optuna: starting its environment ({optuna_python}) ...", flush=True)
                worker = PeerWorker(optuna_python, Path(__file__), "--optuna-worker", str(npz), work, WORKER_TAG)
                optuna_info = worker.receive()
            except (OptunaUnavailable, OSError, subprocess.SubprocessError) as e:
                optuna_status = f"optuna: not measured: {e}"
                if worker:
                    worker.close()
                worker = None

        load = os.getloadavg()
        print(f"timing on {cpu_name()}, {THREADS} threads ...", flush=True)
        from radassets.evaluation.probes import knn_protocol

        for name, (x, y) in data.items():
            knn_protocol(x, y)  # warm-up, not counted (the worker warmed up on its own at start)
            for repeat in range(args.repeats):  # the paths alternate run by run: load spikes hit all alike
                r = time_radassets(x, y)
                add_run(results[name].setdefault("radassets", {}), r)
                line = f"  {name:<10} run {repeat + 1}/{args.repeats}: radassets {r['seconds']:.2f} s"
                for sampler in samplers:
                    if worker is None:
                        break
                    try:
                        p = worker.request({"partition": name, "sampler": sampler, "trials": args.trials,
                                            "own_choice": repeat == 0})
                        add_run(results[name].setdefault(f"optuna-{sampler}", {}), p)
                        line += f", optuna-{sampler} {p['seconds']:.2f} s"
                    except (OptunaUnavailable, OSError) as e:
                        optuna_status = f"optuna: failed during timing, skipped: {e}"
                        worker.close()
                        worker = None
                        for paths in results.values():  # a peer timed on some partitions only: dropped
                            for key in [k for k in paths if k != "radassets"]:
                                del paths[key]
                print(line, flush=True)
    finally:
        if worker is not None:
            worker.close()
        tmp.cleanup()
    total = time.perf_counter() - wall

    # ---- report
    print(f"\nEVALUATION  kNN protocol of TumorImagingBench per partition: {N_SPLITS} stratified 50/20/30 splits "
          f"(seeds 0..{N_SPLITS - 1}), cosine kNN, k in 1..min({K_MAX}, n_train) by validation AUC, test AUC")
    print(f"CPU: {cpu_name()} ({os.cpu_count()} cores, load average {load[0]:.2f} before timing: other work on "
          f"the machine slows both paths), {THREADS} threads (threadpoolctl) in both environments")
    print(f"data: synthetic float32 embeddings, non-negative, planted signal ({POSITIVE_FRACTION:.0%} positive), "
          f"seed {SEED}; same arrays to both paths")
    runs = f"{args.repeats} timed run{'s' if args.repeats > 1 else ''}"
    print(f"timing: per partition, 1 untimed warm-up, then {runs} of the whole protocol per path, the paths "
          f"alternating run by run; median (min)")
    print(f"radassets: probes.knn_protocol, exact search (one cosine neighbour ranking per split, all k at once); "
          f"scikit-learn {sklearn.__version__}, numpy {np.__version__}")
    if optuna_info is not None:
        v = optuna_info["versions"]
        print(f"peer: Optuna {v['optuna']} in its own environment ({optuna_python}; scikit-learn {v['scikit-learn']}, "
              f"numpy {v['numpy']}, Python {v['python']}), timed inside the worker (start-up + imports "
              f"{optuna_info['import_s']:.1f} s, not counted): per split a study maximising validation AUC over k, "
              f"KNeighborsClassifier(k, metric='cosine', algorithm='brute') per trial, best k refitted for the "
              f"test AUC")
        for sampler in samplers:
            if sampler == "grid":
                print("  optuna-grid:    GridSampler(k in 1..kk, seed=split seed), kk trials: every k once, in a "
                      "random order (TumorImagingBench's train_knn_classifier)")
            elif sampler == "tpe-all":
                print("  optuna-tpe-all: TPESampler(seed=split seed) with every k in 1..kk enqueued (enqueue_trial, "
                      "increasing k), kk trials: exhaustive, as TPE alone is not")
            else:
                print(f"  optuna-tpe:     TPESampler(seed=split seed), {args.trials} trials, nothing enqueued: not "
                      f"exhaustive, may miss the best k")
        print("  ties: the peer refits the smallest k among trials with value == study.best_value, as radassets "
              "does (Optuna's best_params takes the first such trial in its random trial order)")
    if optuna_status:
        print(optuna_status)

    print(f"\n{'partition':<10} {'path':<14} {'s/partition':>11} {'(min)':>8} {'ms/split':>9} {'mean test AUC':>14}")
    for name, paths in results.items():
        for path, r in paths.items():
            med = statistics.median(r["seconds"])
            auc = float(np.mean([s["test_auc"] for s in r["splits"]]))
            print(f"{name:<10} {path:<14} {med:>11.3f} {min(r['seconds']):>8.3f} {1000 * med / N_SPLITS:>9.1f} "
                  f"{auc:>14.4f}")

    checks, all_identical = {}, True
    if any(len(paths) > 1 for paths in results.values()):
        print("\nAUC check, per split against radassets (k, validation AUC, test AUC):")
    for name, paths in results.items():
        ours = paths["radassets"]
        if not ours["repeats_identical"]:
            print(f"  {name}: radassets' repeats differ (not deterministic)")
        for path, r in paths.items():
            if path == "radassets":
                continue
            c = compare(ours["splits"], r["splits"])
            c["repeats_identical"] = r["repeats_identical"]
            c["optuna_own_choice"] = r["optuna_own_choice"]
            checks[f"{name} {path}"] = c
            all_identical &= c["test_auc_identical"]
            verdict = "identical" if c["test_auc_identical"] else "NOT IDENTICAL"
            print(f"  {name:<10} {path:<14} test AUCs {verdict}: max |d test AUC| = {c['max_abs_diff_test_auc']:.3g}, "
                  f"max |d val AUC| = {c['max_abs_diff_val_auc']:.3g}; same k in {c['same_k']}/{c['splits']} splits; "
                  f"exact best val AUC reached in {c['reached_best_val_auc']}/{c['splits']}")
            if c["optuna_best_params_differs"]:
                own = c["optuna_own_choice"]
                changed = sum(1 for o in own if o["test_auc"] != ours["splits"][o["seed"]]["test_auc"])
                print(f"  {'':<10} {'':<14} Optuna's own best_params (first of the tied trials) was another k in "
                      f"{c['optuna_best_params_differs']} split(s); its test AUC would have differed in {changed}")
            if not r["repeats_identical"]:
                print(f"  {'':<10} {'':<14} note: the peer's repeats chose differently (not deterministic)")
            if not c["test_auc_identical"]:
                print(f"  !!! {name} {path}: THE TEST AUCs ARE NOT IDENTICAL TO RADASSETS' !!!")
                for a, b in zip(ours["splits"], r["splits"]):
                    if a["test_auc"] != b["test_auc"]:
                        print(f"      seed {a['seed']}: radassets k={a['k']} val {a['val_auc']:.6f} test "
                              f"{a['test_auc']:.6f} | peer k={b['k']} val {b['val_auc']:.6f} test {b['test_auc']:.6f}")
    for name, paths in results.items():
        for path, r in paths.items():
            ks = " ".join(str(s["k"]) for s in r["splits"])
            print(f"  chosen k  {name:<10} {path:<14} {ks}")
    print(f"\ntotal {total:.1f} s")

    ratios, ratios_min = {}, {}
    for name, paths in results.items():
        ours = paths["radassets"]["seconds"]
        for path, r in paths.items():
            if path != "radassets":
                ratios[f"{path}/radassets {name}"] = statistics.median(r["seconds"]) / statistics.median(ours)
                ratios_min[f"{path}/radassets {name}"] = min(r["seconds"]) / min(ours)
    if ratios_min:
        print("ratios of the minima (the least disturbed runs): "
              + ", ".join(f"{k} {v:.1f}" for k, v in ratios_min.items()))
    if checks:
        print(f"test AUCs identical in every partition and peer: {'yes' if all_identical else 'NO'}")
    for name, value in ratios.items():
        print(f"RATIO {name} = {value:.1f}")

    if args.json:
        args.json.write_text(json.dumps({
            "threads": THREADS, "cpu": cpu_name(), "load_average_before": load[0], "seed": SEED,
            "scikit_learn": sklearn.__version__, "numpy": np.__version__, "repeats": args.repeats,
            "tpe_trials": args.trials, "optuna": optuna_info, "optuna_status": optuna_status,
            "partitions": {name: {"n": int(data[name][0].shape[0]), "d": int(data[name][0].shape[1]),
                                  "positives": int(data[name][1].sum()), "paths": paths}
                           for name, paths in results.items()},
            "checks": checks, "test_auc_identical": all_identical if checks else None,
            "ratios": ratios, "ratios_of_minima": ratios_min, "total_s": total}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
