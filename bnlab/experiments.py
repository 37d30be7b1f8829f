"""The experiments of chapter 4, from the command line or from a notebook.

Experiments (each writes ``results/ch04_<name>.json``)::

    lr_sweep     BN vs no BN over a grid of learning rates: loss curves, accuracy table,
                 divergence, images per second
    init_scale   convolution weights drawn from He's initialization times a factor s
    batch_size   batch sizes from 2 to 512 (learning rate scaled linearly with the batch)
    eval_bug     the forgotten model.eval(): test accuracy with batch statistics
    custom_bn    the same CNN trained with nn.BatchNorm2d, the course's BatchNorm2d module and
                 its BatchNormFunction; curves and time per training step

Profiles: ``--quick`` (seconds to a few minutes on a CPU, what the chapter runs live),
``--record-cpu`` (the reduced run recorded on a 2-core CPU, about 25 minutes) and ``--full``
(the whole data set and 15 epochs, meant for a GPU).

Examples::

    python -m bnlab.experiments --help
    python -m bnlab.experiments lr_sweep --quick --out /tmp/results
    python -m bnlab.experiments all --record-cpu            # writes results/ch04_*.json
    python -m bnlab.experiments all --full --device cuda
    python -m bnlab.experiments lr_sweep --full --set epochs=20 --set lrs=0.05,0.2

From Python::

    from bnlab.experiments import run, load_result
    result = run("lr_sweep", quick=True)            # returns the JSON-ready dict
    recorded = load_result("lr_sweep")              # results/ch04_lr_sweep.json, or None
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bnlab.device import PROJECT_ROOT, git_revision, load_average, provenance, seed_everything, select_device
from bnlab.train import (TrainConfig, build_model, classifier_sharpness, evaluate_in_train_mode, load_data,
                         time_training_steps, train)

RESULTS_DIR = PROJECT_ROOT / "results"
if not RESULTS_DIR.is_dir():  # the student kit: no project around, the recorded results ship inside bnlab
    RESULTS_DIR = Path(__file__).resolve().parent / "results"
SCHEMA_VERSION = 1
PROFILES = ("quick", "record-cpu", "full")

# Settings shared by every experiment of a profile; each experiment adds or overrides some.
BASE = {
    "quick": dict(train_size=2000, test_size=1000, train_eval_size=500, epochs=1, batch_size=32,
                  lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="onecycle", width=16,
                  augment=False, compile=False, eval_batch_size=500),
    "record-cpu": dict(train_size=4000, test_size=2000, train_eval_size=1000, epochs=1, batch_size=64,
                       lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="onecycle", width=32,
                       augment=False, compile=False, eval_batch_size=500),
    "full": dict(train_size=None, test_size=None, train_eval_size=10000, epochs=15, batch_size=256,
                 lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, schedule="onecycle", width=32,
                 augment=True, compile="auto"),
}

EXPERIMENTS = {
    "lr_sweep": {
        "doc": "BN vs no BN over a learning-rate grid",
        "quick": dict(lrs=[0.03, 0.3], sharpness_samples=256, sharpness_iters=20),
        "record-cpu": dict(lrs=[0.01, 0.03, 0.1, 0.3, 1.0], epochs=2),
        "full": dict(lrs=[0.01, 0.03, 0.1, 0.3, 1.0]),
    },
    "init_scale": {
        "doc": "sensitivity to the scale of the initial convolution weights",
        "quick": dict(scales=[0.1, 3.0]),
        "record-cpu": dict(scales=[0.1, 0.3, 1.0, 3.0, 10.0]),
        "full": dict(scales=[0.1, 0.3, 1.0, 3.0, 10.0], epochs=5, augment=False, lr=0.05),
    },
    "batch_size": {
        "doc": "batch sizes 2..512, learning rate scaled linearly with the batch size",
        "quick": dict(batch_sizes=[4, 64], base_lr=0.02, base_batch=32),
        "record-cpu": dict(batch_sizes=[2, 8, 32, 128, 512], base_lr=0.02, base_batch=64),
        "full": dict(batch_sizes=[2, 8, 32, 128, 512], base_lr=0.02, base_batch=64, epochs=3,
                     augment=False, train_size=20000),
    },
    "eval_bug": {
        "doc": "test accuracy when model.eval() is forgotten",
        "quick": dict(eval_batch_sizes=[1, 8, 64, 1000], sorted_batch_size=50),
        "record-cpu": dict(eval_batch_sizes=[1, 4, 16, 64, 256, 2000], sorted_batch_size=100, epochs=2),
        "full": dict(eval_batch_sizes=[1, 4, 16, 64, 256, 1000, 10000], sorted_batch_size=100),
    },
    "custom_bn": {
        "doc": "nn.BatchNorm2d vs the course's BatchNorm2d and BatchNormFunction",
        "quick": dict(variants=["torch", "module", "function"], timing_batch=64, timing_steps=2,
                      timing_repeats=3),
        "record-cpu": dict(variants=["torch", "module", "function"], timing_batch=64, timing_steps=5,
                           timing_repeats=7),
        "full": dict(variants=["torch", "module", "function"], timing_batch=256, timing_steps=20,
                     timing_repeats=7, compile=False, epochs=5),
    },
}
NAMES = tuple(EXPERIMENTS)


def default_config(name: str, profile: str = "quick") -> dict:
    """The configuration of experiment ``name`` under ``profile`` (a fresh dict)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(NAMES)}")
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    cfg = copy.deepcopy(BASE[profile])
    cfg.update(copy.deepcopy(EXPERIMENTS[name][profile]))
    return cfg


def result_path(name: str, out_dir: Path | str = RESULTS_DIR) -> Path:
    return Path(out_dir) / f"ch04_{name}.json"


def load_result(name: str, results_dir: Path | str = RESULTS_DIR) -> dict | None:
    """The recorded result of experiment ``name`` (``results/ch04_<name>.json``), or None."""
    path = result_path(name, results_dir)
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def _dumps(obj) -> str:
    """JSON with lists of numbers on one line (readable diffs, small files)."""
    text = json.dumps(obj, indent=1, allow_nan=False)
    return re.sub(r"\[\s+([^\[\]{}]*?)\s+\]",
                  lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)


def save_result(result: dict, out_dir: Path | str = RESULTS_DIR) -> Path:
    path = result_path(result["experiment"], out_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_dumps(result) + "\n")
    return path


def _train_config(cfg: dict, **changes) -> TrainConfig:
    values = dict(cfg)
    values.update(changes)
    return TrainConfig.from_dict(values)


def _summary(history: dict, **keys) -> dict:
    row = dict(keys)
    for k in ("final_test_acc", "final_train_acc", "diverged", "diverged_at_step", "images_per_s", "steps",
              "train_time_s"):
        row[k] = history.get(k)
    return row


def _median(values):
    values = [v for v in values if v is not None]
    return round(float(np.median(values)), 1) if values else None


# --------------------------------------------------------------------------------------------
# The experiments. Each takes the merged config, the data on the device and the hooks
# (make_cnn, evaluate, bn_module, bn_function), and returns the "results" part of the JSON.


def exp_lr_sweep(cfg, data, device, hooks, progress):
    runs = []
    for use_bn in (True, False):
        for lr in cfg["lrs"]:
            tag = f"{'BN' if use_bn else 'no BN'} lr={lr:g}"
            h = train(_train_config(cfg, use_bn=use_bn, lr=lr), data, device, progress=progress, desc=tag, **hooks)
            h.update(use_bn=use_bn, lr=lr)
            runs.append(h)
    table = [_summary(h, use_bn=h["use_bn"], lr=h["lr"]) for h in runs]
    # Curvature of the classifier at initialization (why BN's loss jumps in the first steps).
    sharpness = {}
    n = min(cfg.get("sharpness_samples", 512), data.x_train.shape[0])
    for use_bn in (True, False):
        model = build_model(_train_config(cfg, use_bn=use_bn), device, hooks.get("make_cnn"))
        model.train()
        sharpness["bn" if use_bn else "no_bn"] = classifier_sharpness(
            model, data.x_train[:n], data.y_train[:n], iters=cfg.get("sharpness_iters", 50))
    throughput = {
        "bn_images_per_s": _median([h["images_per_s"] for h in runs if h["use_bn"] and not h["diverged"]]),
        "no_bn_images_per_s": _median([h["images_per_s"] for h in runs if not h["use_bn"] and not h["diverged"]]),
        "note": "median over the learning rates of training images per second (training steps only, "
                "evaluation excluded); diverged runs excluded",
    }
    return {"runs": runs, "table": table, "throughput": throughput, "classifier_sharpness_at_init": sharpness}


def _initial_logit_std(cfg, data, device, hooks, use_bn, scale):
    model = build_model(_train_config(cfg, use_bn=use_bn, init_scale=scale), device,
                        hooks.get("make_cnn"), hooks.get("bn_module"), hooks.get("bn_function"))
    model.train()
    with torch.no_grad():
        logits = model(data.x_train[:256])
    return float(logits.float().std())


def exp_init_scale(cfg, data, device, hooks, progress):
    runs = []
    logit_std = []
    for use_bn in (True, False):
        for scale in cfg["scales"]:
            tag = f"{'BN' if use_bn else 'no BN'} s={scale:g}"
            logit_std.append({"use_bn": use_bn, "init_scale": scale,
                              "logit_std": _initial_logit_std(cfg, data, device, hooks, use_bn, scale)})
            h = train(_train_config(cfg, use_bn=use_bn, init_scale=scale), data, device, progress=progress,
                      desc=tag, **hooks)
            h.update(use_bn=use_bn, init_scale=scale)
            runs.append(h)
    table = [_summary(h, use_bn=h["use_bn"], init_scale=h["init_scale"]) for h in runs]
    return {"runs": runs, "table": table, "initial_logit_std": logit_std}


def exp_batch_size(cfg, data, device, hooks, progress):
    runs = []
    for use_bn in (True, False):
        for bs in cfg["batch_sizes"]:
            lr = cfg["base_lr"] * bs / cfg["base_batch"]
            tag = f"{'BN' if use_bn else 'no BN'} batch={bs}"
            h = train(_train_config(cfg, use_bn=use_bn, batch_size=bs, lr=lr), data, device, progress=progress,
                      desc=tag, **hooks)
            h.update(use_bn=use_bn, batch_size=bs, lr=lr)
            runs.append(h)
    table = [_summary(h, use_bn=h["use_bn"], batch_size=h["batch_size"], lr=h["lr"]) for h in runs]
    return {"runs": runs, "table": table}


def exp_eval_bug(cfg, data, device, hooks, progress):
    evaluate = hooks.get("evaluate") or _ref("evaluate")
    h, model = train(_train_config(cfg, use_bn=True), data, device, progress=progress, desc="BN (eval bug)",
                     return_model=True, **hooks)
    model = model.float()
    X, y = data.x_test, data.y_test
    correct = evaluate(model, X, y, 1000)
    rows = []
    for bs in cfg["eval_batch_sizes"]:
        copy_ = copy.deepcopy(model)
        buggy = evaluate_in_train_mode(copy_, X, y, bs)
        rows.append({"eval_batch_size": bs, "train_mode_acc": round(buggy, 5),
                     "eval_mode_acc_afterwards": round(evaluate(copy_, X, y, 1000), 5)})
    order = torch.argsort(y.cpu(), stable=True).to(y.device)          # the test set sorted by class
    copy_ = copy.deepcopy(model)
    sorted_acc = evaluate_in_train_mode(copy_, X[order], y[order], cfg["sorted_batch_size"])
    after_sorted = evaluate(copy_, X, y, 1000)
    return {
        "training": h,
        "eval_mode_acc": round(correct, 5),
        "train_mode": rows,
        "sorted": {"batch_size": cfg["sorted_batch_size"], "train_mode_acc": round(sorted_acc, 5),
                   "eval_mode_acc_afterwards": round(after_sorted, 5)},
    }


def exp_custom_bn(cfg, data, device, hooks, progress):
    runs = []
    for variant in cfg["variants"]:
        h = train(_train_config(cfg, use_bn=True, bn=variant), data, device, progress=progress,
                  desc=f"BN={variant}", **hooks)
        h.update(variant=variant)
        runs.append(h)
    # Same seed, same initial weights: the three networks compute the same function at the start.
    build = {k: hooks.get(k) for k in ("make_cnn", "bn_module", "bn_function")}
    models = {"no_bn": build_model(_train_config(cfg, use_bn=False), device, **build)}
    for variant in cfg["variants"]:
        models[variant] = build_model(_train_config(cfg, use_bn=True, bn=variant), device, **build)
    xb = data.x_train[:cfg["timing_batch"]]
    yb = data.y_train[:cfg["timing_batch"]]
    with torch.no_grad():
        ref = models["torch"](xb)
        init_diff = {v: float((models[v](xb) - ref).abs().max()) for v in cfg["variants"]}
    timing = time_training_steps(models, xb, yb, steps=cfg["timing_steps"], repeats=cfg["timing_repeats"])
    base = timing["torch"]["median_s"]
    ratios = {v: round(timing[v]["median_s"] / base, 3) for v in models}
    table = [_summary(h, variant=h["variant"]) for h in runs]
    return {"runs": runs, "table": table, "initial_max_abs_logit_diff": init_diff,
            "step_time": timing, "step_time_ratio_to_torch": ratios}


RUNNERS = {"lr_sweep": exp_lr_sweep, "init_scale": exp_init_scale, "batch_size": exp_batch_size,
           "eval_bug": exp_eval_bug, "custom_bn": exp_custom_bn}


def _ref(name):
    from solutions import ch04_cnn

    return getattr(ch04_cnn, name)


def _describe(fn):
    if fn is None:
        return "reference (solutions.ch04_cnn)"
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def run(name: str, quick: bool = True, *, profile: str | None = None, device="auto", seed: int = 0,
        progress: bool = False, out: Path | str | None = None, data=None, make_cnn=None, evaluate=None,
        bn_module=None, bn_function=None, data_root=None, **overrides) -> dict:
    """Run experiment ``name`` and return its result (the JSON document as a dict).

    Parameters
    ----------
    name : str
        One of ``lr_sweep``, ``init_scale``, ``batch_size``, ``eval_bug``, ``custom_bn``.
    quick : bool
        The ``quick`` profile (default) or, if False, the ``full`` one.
    profile : str, optional
        ``"quick"``, ``"record-cpu"`` or ``"full"``; overrides ``quick``.
    device : str
        ``"auto"`` (cuda > mps > cpu), ``"cuda"``, ``"mps"`` or ``"cpu"``.
    seed : int
        Seeds the subset, the initializations, the batch order.
    progress : bool
        tqdm progress bars.
    out : path, optional
        Directory to write ``ch04_<name>.json`` into; None writes nothing.
    data : bnlab.train.Data, optional
        Data already on the device (else Fashion-MNIST is loaded with the profile's subset
        sizes).
    make_cnn, evaluate, bn_module, bn_function : optional
        Implementations to use instead of the course's reference (a chapter passes the
        student's).
    **overrides
        Changes to the configuration (e.g. ``train_size=2000``, ``lrs=[0.1]``).

    Returns
    -------
    dict
        ``experiment``, ``schema_version``, ``profile``, ``provenance`` (device, device_name,
        torch, cuda, date, wall_time_s, ...; no host name), ``config`` and ``results``.
    """
    if name not in RUNNERS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(NAMES)}")
    profile = profile or ("quick" if quick else "full")
    cfg = default_config(name, profile)
    unknown = set(overrides) - set(cfg) - {f for f in TrainConfig.__dataclass_fields__}
    if unknown:
        raise ValueError(f"unknown configuration keys for {name}: {sorted(unknown)}")
    cfg.update(overrides)
    cfg["seed"] = seed
    dev = select_device(device)
    seed_everything(seed)
    load_at_start = load_average()
    revision = git_revision()          # the code that runs, before anyone changes the tree
    t0 = time.perf_counter()
    if data is None:
        data = load_data(dev, cfg.get("train_size"), cfg.get("test_size"), seed=seed, root=data_root)
    elif data.device != dev:
        raise ValueError(f"data is on {data.device}, the experiment runs on {dev}")
    hooks = {k: v for k, v in (("make_cnn", make_cnn), ("evaluate", evaluate), ("bn_module", bn_module),
                               ("bn_function", bn_function)) if v is not None}
    results = RUNNERS[name](cfg, data, dev, hooks, progress)
    wall = time.perf_counter() - t0
    cfg["data"] = dict(data.info)
    cfg["implementations"] = {k: _describe(hooks.get(k)) for k in ("make_cnn", "evaluate", "bn_module",
                                                                    "bn_function")}
    result = {
        "experiment": name,
        "schema_version": SCHEMA_VERSION,
        "profile": profile,
        "description": EXPERIMENTS[name]["doc"],
        "provenance": provenance(dev, wall_time_s=wall, load_average_start=load_at_start, git=revision),
        "config": cfg,
        "results": results,
    }
    if out is not None:
        save_result(result, out)
    return result


# --------------------------------------------------------------------------------------------
# Command line


def _parse_value(text: str):
    if "," in text:
        return [_parse_value(t) for t in text.split(",") if t]
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def summarize(result: dict) -> str:
    """A few readable lines about a result."""
    prov = result["provenance"]
    lines = [f"{result['experiment']} ({result['profile']}) on {prov['device']} ({prov['device_name']}), "
             f"torch {prov['torch']}, {prov['wall_time_s']} s"]
    res = result["results"]
    rows = res.get("table") or []
    for row in rows:
        keys = {k: v for k, v in row.items() if k in ("use_bn", "lr", "init_scale", "batch_size", "variant")}
        acc = row["final_test_acc"]
        state = "DIVERGED" if row["diverged"] else f"test acc {acc:.4f}"
        lines.append(f"  {keys}: {state}, {row['images_per_s']} images/s")
    if "eval_mode_acc" in res:
        lines.append(f"  eval mode: {res['eval_mode_acc']:.4f}")
        for row in res["train_mode"]:
            lines.append(f"  train mode, batch {row['eval_batch_size']}: {row['train_mode_acc']:.4f}")
        lines.append(f"  train mode, class-sorted batches: {res['sorted']['train_mode_acc']:.4f}")
    if "step_time_ratio_to_torch" in res:
        lines.append(f"  step time / nn.BatchNorm2d: {res['step_time_ratio_to_torch']}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bnlab.experiments",
        description="Chapter 4 experiments: a CNN on Fashion-MNIST with and without Batch Normalization.",
        epilog="Experiments: " + "; ".join(f"{k}: {v['doc']}" for k, v in EXPERIMENTS.items()),
    )
    parser.add_argument("experiment", nargs="+", choices=[*NAMES, "all", "list"],
                        help="the experiments to run ('all' runs every one, 'list' prints their configurations)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", dest="profile", action="store_const", const="quick",
                       help="small run for a CPU (default)")
    group.add_argument("--record-cpu", dest="profile", action="store_const", const="record-cpu",
                       help="the reduced configuration recorded on a 2-core CPU (about 25 minutes); implies --device cpu")
    group.add_argument("--full", dest="profile", action="store_const", const="full",
                       help="whole data set, 15 epochs: meant for a GPU")
    parser.set_defaults(profile="quick")
    parser.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cuda, mps or cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None,
                        help="directory for ch04_<experiment>.json (default: results/ for --record-cpu and "
                             "--full; --quick writes nothing unless --out is given)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a configuration value (lists with commas), e.g. --set lrs=0.1,0.3")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    wanted = args.experiment
    names = list(NAMES) if ("all" in wanted or "list" in wanted) else list(dict.fromkeys(wanted))
    overrides = {}
    for item in args.set:
        if "=" not in item:
            print(f"error: --set expects KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        key, value = item.split("=", 1)
        overrides[key.strip()] = _parse_value(value.strip())
    if "list" in wanted:
        for name in names:
            print(f"{name}: {json.dumps(default_config(name, args.profile))}")
        return 0
    device = args.device
    if args.profile == "record-cpu":
        if device not in ("auto", "cpu"):
            print("error: --record-cpu records a CPU run; drop --device or use --full", file=sys.stderr)
            return 2
        device = "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out if args.out is not None else (None if args.profile == "quick" else str(RESULTS_DIR))
    try:
        dev = select_device(device)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.profile == "full" and dev.type == "cpu":
        print("warning: --full on the CPU takes hours; --record-cpu is the CPU configuration", file=sys.stderr)
    for name in names:
        try:
            result = run(name, profile=args.profile, device=str(dev), seed=args.seed,
                         progress=not args.no_progress, out=out, **overrides)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(summarize(result), flush=True)
        if out is not None:
            print(f"  -> {result_path(name, out)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
