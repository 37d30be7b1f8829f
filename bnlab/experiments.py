"""The experiments of chapters 4, 5 and 6, from the command line or from a notebook.

Chapter 4's experiments (each writes ``results/ch04_<name>.json``)::

    lr_sweep     BN vs no BN over a grid of learning rates: loss curves, accuracy table,
                 divergence, images per second
    init_scale   convolution weights drawn from He's initialization times a factor s
    batch_size   batch sizes from 2 to 512 (learning rate scaled linearly with the batch)
    eval_bug     the forgotten model.eval(): test accuracy with batch statistics
    custom_bn    the same CNN trained with nn.BatchNorm2d, the course's BatchNorm2d module and
                 its BatchNormFunction; curves and time per training step

Chapter 5's experiments (each writes ``results/ch05_<name>.json``; the code is in
:mod:`bnlab.covariate_shift`)::

    percentiles  Ioffe & Szegedy's Fig. 1: a 3 x 100 sigmoid MLP with and without BN, test accuracy
                 and the 15/50/85th percentiles of one last-layer sigmoid's input over training
    noisy_bn     Santurkar et al.'s noisy BN: standard, BN, noisy-BN and standard+noise CNNs
    ics          ICS through gradients (Definition 2.1): the CNN at two learning rates, and the
                 25-layer deep linear network
    landscape    loss range, gradient predictiveness and effective beta-smoothness along the gradient
    gamma_beta   Frankle et al.: frozen random weights, only BN's gamma and beta trained
    depth_growth at initialization: gradient growth per layer in deep BN MLPs without skips
                 (Yang et al.) and activation growth in residual blocks without BN (Bjorck et al.)

Chapter 6's experiments (each writes ``results/ch06_<name>.json``)::

    small_batch  BN, GroupNorm, LayerNorm and no normalization across batch sizes, every run the
                 same number of steps (max_steps) with the same schedule and peak learning rate;
                 for BN also train-mode test accuracy, the distance of batch means from the
                 running means, and the accuracy after recomputing the statistics (precise BN)
    folding      inference with BN folded into the preceding convolutions (torch.fx's fuse and
                 a fold function) vs unfolded: largest logit difference and time per batch

Selectors on the command line: an experiment's name, ``ch04``, ``ch05`` or ``ch06`` (that chapter's
experiments), ``all`` (every experiment of every chapter) and ``list`` (print the
configurations of the selected experiments, or of all, instead of running them).

Profiles: ``--quick`` (seconds to a few minutes on a CPU, what the chapters run live),
``--record-cpu`` (the reduced run recorded on a 2-core CPU: chapter 4 about 25 minutes,
chapter 5 about 20, chapter 6 about 20) and ``--full`` (the whole data set, meant for a GPU).

Examples::

    python -m bnlab.experiments --help
    python -m bnlab.experiments lr_sweep --quick --out /tmp/results
    python -m bnlab.experiments ch04 --record-cpu           # writes results/ch04_*.json
    python -m bnlab.experiments ch05 --record-cpu           # writes results/ch05_*.json
    python -m bnlab.experiments small_batch folding --record-cpu   # results/ch06_*.json
    python -m bnlab.experiments all --full --device cuda
    python -m bnlab.experiments lr_sweep --full --set epochs=20 --set lrs=0.05,0.2

From Python::

    from bnlab.experiments import run, load_result
    result = run("lr_sweep", quick=True)            # returns the JSON-ready dict
    recorded = load_result("lr_sweep")              # results/ch04_lr_sweep.json, or None
    folded = run("folding", quick=True, fold=my_fold_batchnorm)   # the student's fold
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bnlab import covariate_shift
from bnlab.device import PROJECT_ROOT, git_revision, load_average, provenance, seed_everything, select_device
from bnlab.models import replace_batchnorm
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
        "chapter": "ch04",
        "doc": "BN vs no BN over a learning-rate grid",
        "quick": dict(lrs=[0.03, 0.3], sharpness_samples=256, sharpness_iters=20),
        "record-cpu": dict(lrs=[0.01, 0.03, 0.1, 0.3, 1.0], epochs=2),
        "full": dict(lrs=[0.01, 0.03, 0.1, 0.3, 1.0]),
    },
    "init_scale": {
        "chapter": "ch04",
        "doc": "sensitivity to the scale of the initial convolution weights",
        "quick": dict(scales=[0.1, 3.0]),
        "record-cpu": dict(scales=[0.1, 0.3, 1.0, 3.0, 10.0]),
        "full": dict(scales=[0.1, 0.3, 1.0, 3.0, 10.0], epochs=5, augment=False, lr=0.05),
    },
    "batch_size": {
        "chapter": "ch04",
        "doc": "batch sizes 2..512, learning rate scaled linearly with the batch size",
        "quick": dict(batch_sizes=[4, 64], base_lr=0.02, base_batch=32),
        "record-cpu": dict(batch_sizes=[2, 8, 32, 128, 512], base_lr=0.02, base_batch=64),
        "full": dict(batch_sizes=[2, 8, 32, 128, 512], base_lr=0.02, base_batch=64, epochs=3,
                     augment=False, train_size=20000),
    },
    "eval_bug": {
        "chapter": "ch04",
        "doc": "test accuracy when model.eval() is forgotten",
        "quick": dict(eval_batch_sizes=[1, 8, 64, 1000], sorted_batch_size=50),
        "record-cpu": dict(eval_batch_sizes=[1, 4, 16, 64, 256, 2000], sorted_batch_size=100, epochs=2),
        "full": dict(eval_batch_sizes=[1, 4, 16, 64, 256, 1000, 10000], sorted_batch_size=100),
    },
    "custom_bn": {
        "chapter": "ch04",
        "doc": "nn.BatchNorm2d vs the course's BatchNorm2d and BatchNormFunction",
        "quick": dict(variants=["torch", "module", "function"], timing_batch=64, timing_steps=2,
                      timing_repeats=3),
        "record-cpu": dict(variants=["torch", "module", "function"], timing_batch=64, timing_steps=5,
                           timing_repeats=7),
        "full": dict(variants=["torch", "module", "function"], timing_batch=256, timing_steps=20,
                     timing_repeats=7, compile=False, epochs=5),
    },
    # ---------------------------------------------------------------- chapter 5
    # Every chapter-5 run is plain SGD at a constant learning rate (no momentum, no weight decay,
    # no schedule), as in Ioffe & Szegedy's Sec. 4.1 and Santurkar et al.'s App. A.1.
    # percentiles: Ioffe & Szegedy's Fig. 1 (3 x 100 sigmoid MLP, batch 60, 50,000 steps); lr 0.1
    # and init_std 0.1 are this course's choices (the paper gives neither).
    "percentiles": {
        "chapter": "ch05",
        "doc": "Ioffe & Szegedy's Fig. 1: a sigmoid MLP with and without BN, percentiles of a sigmoid's input",
        "hooks": ("evaluate",),
        "quick": dict(train_size=10000, test_size=2000, steps=3000, record_every=100, batch_size=60, lr=0.1,
                      hidden=100, layers=3, init_std=0.1, unit=0, probe_size=1000, loss_points=100),
        "record-cpu": dict(train_size=None, test_size=None, steps=50000, record_every=500, batch_size=60, lr=0.1,
                           hidden=100, layers=3, init_std=0.1, unit=0, probe_size=10000, loss_points=200),
        "full": dict(train_size=None, test_size=None, steps=50000, record_every=250, batch_size=60, lr=0.1,
                     hidden=100, layers=3, init_std=0.1, unit=0, probe_size=10000, loss_points=200),
    },
    # noisy_bn: Santurkar et al. Sec. 2.1 with Algorithm 1's constants (the NoisyBatchNorm2d
    # defaults); the activations are those entering ReLU activation_block (0-based) of the CNN.
    # Two learning rates, Santurkar et al.'s 0.1 and 0.5 (their Fig. 1): at 0.1 the shallow CNN
    # trains almost as well without BN, which leaves BN little advantage for the noise to remove.
    "noisy_bn": {
        "chapter": "ch05",
        "doc": "Santurkar et al.'s noisy BN: standard, BN, noisy-BN and standard+noise CNNs",
        "hooks": ("make_cnn", "evaluate", "noisy_bn"),
        "quick": dict(train_size=4000, test_size=1000, train_eval_size=500, width=8, steps=300, batch_size=64,
                      lrs=[0.1], record_every=25, variants=["standard", "bn", "noisy_bn"],
                      activation_block=2, channel=0, loss_points=100),
        "record-cpu": dict(train_size=20000, test_size=2000, train_eval_size=1000, width=16, steps=2000,
                           batch_size=64, lrs=[0.1, 0.5], record_every=50,
                           variants=["standard", "bn", "noisy_bn", "standard_noise"], activation_block=2,
                           channel=0, loss_points=200),
        "full": dict(train_size=None, test_size=None, train_eval_size=5000, width=32, steps=15000, batch_size=128,
                     lrs=[0.1, 0.5], record_every=250, variants=["standard", "bn", "noisy_bn", "standard_noise"],
                     activation_block=2, channel=0, loss_points=300),
    },
    # ics: Definition 2.1 at Santurkar et al.'s learning rates (VGG: 0.1 and 0.01; DLN: 1e-6 and
    # 1e-7); layers are 0-based indices into the weighted layers (the CNN: conv1..conv4, linear).
    "ics": {
        "chapter": "ch05",
        "doc": "internal covariate shift through gradients (Santurkar et al. Def. 2.1): CNN and deep linear network",
        "hooks": ("make_cnn", "evaluate", "measure_ics"),
        "quick": dict(train_size=4000, test_size=1000, width=8, steps=200, batch_size=64, lrs=[0.1, 0.01],
                      record_every=20, layers=[1, 3], dln_depth=25, dln_width=10, dln_examples=1000,
                      dln_lrs=[1e-6, 1e-7], dln_steps=1000, dln_record_every=100, dln_layers=[4, 12, 20],
                      loss_points=100),
        "record-cpu": dict(train_size=20000, test_size=2000, width=16, steps=1500, batch_size=64, lrs=[0.1, 0.01],
                           record_every=50, layers=[1, 3], dln_depth=25, dln_width=10, dln_examples=1000,
                           dln_lrs=[1e-6, 1e-7], dln_steps=10000, dln_record_every=250, dln_layers=[4, 12, 20],
                           loss_points=200),
        "full": dict(train_size=None, test_size=None, width=32, steps=15000, batch_size=128, lrs=[0.1, 0.01],
                     record_every=250, layers=[1, 3], dln_depth=25, dln_width=10, dln_examples=1000,
                     dln_lrs=[1e-6, 1e-7], dln_steps=10000, dln_record_every=100, dln_layers=[4, 12, 20],
                     loss_points=300),
    },
    # landscape: multipliers span Santurkar et al.'s [1/2, 4] x the learning rate.
    "landscape": {
        "chapter": "ch05",
        "doc": "the loss landscape along the gradient (Santurkar et al. Sec. 3.2): loss range, gradient "
               "predictiveness, effective beta-smoothness",
        "hooks": ("make_cnn", "evaluate", "landscape_along_gradient"),
        "quick": dict(train_size=4000, test_size=1000, width=8, steps=200, batch_size=64, lr=0.1, record_every=20,
                      multipliers=[0.5, 1.0, 2.0, 4.0], loss_points=100),
        "record-cpu": dict(train_size=20000, test_size=2000, width=16, steps=1500, batch_size=64, lr=0.1,
                           record_every=50, multipliers=[0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0], loss_points=200),
        "full": dict(train_size=None, test_size=None, width=32, steps=15000, batch_size=128, lr=0.1,
                     record_every=250, multipliers=[0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0], loss_points=300),
    },
    # gamma_beta: Frankle et al.'s experiment on chapter 4's BN CNN; lrs per choice of trained
    # parameters (SGD with momentum).
    "gamma_beta": {
        "chapter": "ch05",
        "doc": "Frankle et al.: frozen random weights, only BN's gamma and beta trained",
        "hooks": ("make_cnn", "evaluate"),
        "quick": dict(train_size=4000, test_size=1000, width=16, steps=300, batch_size=64, momentum=0.9,
                      trained=["all", "bn_only", "classifier_only"],
                      lrs={"all": 0.02, "bn_only": 0.1, "classifier_only": 0.02}, small_gamma=0.1,
                      loss_points=100),
        "record-cpu": dict(train_size=20000, test_size=2000, width=32, steps=1500, batch_size=64, momentum=0.9,
                           trained=["all", "bn_only", "classifier_only"],
                           lrs={"all": 0.02, "bn_only": 0.1, "classifier_only": 0.02}, small_gamma=0.1,
                           loss_points=200),
        "full": dict(train_size=None, test_size=None, width=64, steps=10000, batch_size=128, momentum=0.9,
                     trained=["all", "bn_only", "classifier_only"],
                     lrs={"all": 0.02, "bn_only": 0.1, "classifier_only": 0.02}, small_gamma=0.1,
                     loss_points=300),
    },
    # depth_growth: no data (Gaussian inputs); trim layers at each end of the fit.
    "depth_growth": {
        "chapter": "ch05",
        "doc": "at initialization: gradient growth in deep BN MLPs without skips (Yang et al.), activation "
               "growth in residual blocks without BN (Bjorck et al.)",
        "hooks": (),
        "needs_data": False,
        "quick": dict(growth_width=256, growth_depth=30, growth_batches=[32, 256], trials=2, trim=4,
                      residual_blocks=30, residual_batch=256),
        "record-cpu": dict(growth_width=512, growth_depth=50, growth_batches=[16, 64, 256, 1024], trials=5, trim=5,
                           residual_blocks=50, residual_batch=1024),
        "full": dict(growth_width=1024, growth_depth=50, growth_batches=[16, 64, 256, 1024, 4096], trials=10,
                     trim=5, residual_blocks=50, residual_batch=4096),
    },
    # ---------------------------------------------------------------- chapter 6
    # small_batch: every run takes max_steps steps (epochs are derived per batch size), with
    # the same onecycle schedule and the same peak lr for every batch size and normalization.
    # The peak lr 0.01: of 0.01, 0.02 and 0.05 (quick profile's network, 100 steps), 0.01 and 0.05
    # trained every normalization at batch 256 (0.02 left the network without normalization
    # near chance there); only 0.01 also trained every one above chance at batch 2, so the small
    # batches compare normalizations rather than runs that all failed. gn_groups: groups of
    # GroupNorm (the gcd with the width where it does not divide it); LayerNorm is GroupNorm
    # with one group (statistics over C, H, W). stat_batches: training batches of the training
    # size over which BN's batch statistics are compared with its running ones; precise_bn_*:
    # training images and batch size of the recomputed ("precise") statistics.
    "small_batch": {
        "chapter": "ch06",
        "doc": "BN, GroupNorm, LayerNorm and no normalization across batch sizes, the same number of steps",
        "hooks": ("make_cnn", "evaluate"),
        "quick": dict(norms=["bn", "gn", "ln", "none"], batch_sizes=[2, 16, 128], max_steps=100, width=8,
                      lr=0.01, gn_groups=8, stat_batches=50, precise_bn_images=2048, precise_bn_batch=256,
                      loss_points=50, train_eval_size=500),
        "record-cpu": dict(norms=["bn", "gn", "ln", "none"], batch_sizes=[2, 4, 8, 16, 32, 64, 128, 256],
                           max_steps=400, width=16, train_size=10000, test_size=2000, train_eval_size=1000,
                           lr=0.01, gn_groups=8, stat_batches=50, precise_bn_images=2048, precise_bn_batch=256,
                           loss_points=100),
        "full": dict(norms=["bn", "gn", "ln", "none"], batch_sizes=[2, 4, 8, 16, 32, 64, 128, 256],
                     max_steps=3000, width=32, lr=0.01, nesterov=False, augment=False, compile=False,
                     gn_groups=8, stat_batches=50, precise_bn_images=4096, precise_bn_batch=256, loss_points=100),
    },
    # folding: the BN CNN is trained for train_steps steps (batch train_batch, onecycle) to give
    # it realistic running statistics, then timed at inference (eval mode, no_grad) unfolded,
    # folded by torch.fx's fuse and folded by ``fold``; rounds of blocked_autorange per variant
    # taken in turns (side by side), on timing_threads threads.
    "folding": {
        "chapter": "ch06",
        "doc": "BN folded into the preceding convolution at inference: logit difference and speed-up",
        "hooks": ("make_cnn", "evaluate", "fold"),
        "quick": dict(width=16, train_steps=30, train_batch=64, timing_batch_sizes=[1, 256], min_run_time=0.1,
                      timing_rounds=2, timing_threads=1, diff_batch=256),
        "record-cpu": dict(width=32, train_steps=50, train_batch=64, timing_batch_sizes=[1, 64, 256],
                           min_run_time=1.0, timing_rounds=5, timing_threads=1, diff_batch=256),
        "full": dict(width=32, train_steps=50, train_batch=64, timing_batch_sizes=[1, 64, 256],
                     min_run_time=1.0, timing_rounds=5, timing_threads=1, diff_batch=256, compile=False,
                     augment=False),
    },
}
CHAPTERS = ("ch04", "ch05", "ch06")
CHAPTER_NAMES = {ch: tuple(k for k, v in EXPERIMENTS.items() if v["chapter"] == ch) for ch in CHAPTERS}
NAMES = CHAPTER_NAMES["ch04"]      # chapter 4's experiments (what its notebook lists)
ALL_NAMES = tuple(EXPERIMENTS)     # every experiment of every chapter
CH04_HOOKS = ("make_cnn", "evaluate", "bn_module", "bn_function")


def default_config(name: str, profile: str = "quick") -> dict:
    """The configuration of experiment ``name`` under ``profile`` (a fresh dict)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(ALL_NAMES)}")
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    # chapter 5's experiments configure everything themselves (no CNN training schedule to share)
    cfg = copy.deepcopy(BASE[profile]) if EXPERIMENTS[name]["chapter"] != "ch05" else {}
    cfg.update(copy.deepcopy(EXPERIMENTS[name][profile]))
    return cfg


def result_path(name: str, out_dir: Path | str = RESULTS_DIR) -> Path:
    """``<out_dir>/<chapter>_<name>.json``, e.g. ``results/ch04_lr_sweep.json``, ``results/ch06_folding.json``."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(ALL_NAMES)}")
    return Path(out_dir) / f"{EXPERIMENTS[name]['chapter']}_{name}.json"


def load_result(name: str, results_dir: Path | str = RESULTS_DIR) -> dict | None:
    """The recorded result of experiment ``name`` (``results/<chapter>_<name>.json``), or None."""
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


# --------------------------------------------------------------------------------------------
# Chapter 6


NORMS = ("bn", "gn", "ln", "none")


def gn_groups_for(width: int, groups: int = 8) -> int:
    """``groups`` if it divides both widths of the CNN (``width`` and ``2 * width``), else
    their greatest common divisor with ``groups``."""
    return groups if width % groups == 0 else math.gcd(int(groups), int(width))


def build_norm_model(norm: str, width: int, seed: int = 0, make_cnn=None, gn_groups: int = 8) -> torch.nn.Module:
    """Chapter 4's CNN with the normalization ``norm`` after every convolution.

    ``"bn"``: ``make_cnn(True, width=width)``; ``"gn"``: the same with every ``nn.BatchNorm2d``
    replaced by ``nn.GroupNorm(gn_groups_for(width, gn_groups), C)``; ``"ln"``: by
    ``nn.GroupNorm(1, C)`` (LayerNorm over C, H, W, with per-channel affine parameters);
    ``"none"``: ``make_cnn(False, width=width)`` (convolutions with bias). Every variant is
    built right after ``torch.manual_seed(seed)``, so bn, gn and ln start from the same
    convolution weights.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    make_cnn = make_cnn or _ref("make_cnn")
    torch.manual_seed(seed)
    model = make_cnn(norm != "none", width=width)
    if norm == "gn":
        groups = gn_groups_for(width, gn_groups)
        replace_batchnorm(model, lambda bn: torch.nn.GroupNorm(groups, bn.num_features, eps=bn.eps),
                          copy_state=False)
    elif norm == "ln":
        replace_batchnorm(model, lambda bn: torch.nn.GroupNorm(1, bn.num_features, eps=bn.eps), copy_state=False)
    return model


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Steps of one epoch in :func:`bnlab.train.train` (a last batch of one image is dropped)."""
    return n // batch_size + (1 if n % batch_size >= 2 else 0)


def _subsample_loss(losses: list, points: int) -> tuple[list, list]:
    """Means of ``losses`` over consecutive windows, at most ``points`` of them (None where a
    window holds a non-finite loss), and the step (1-based) each window ends at."""
    n = len(losses)
    if n == 0:
        return [], []
    window = max(1, math.ceil(n / points))
    values, ends = [], []
    for start in range(0, n, window):
        chunk = losses[start:start + window]
        values.append(None if any(v is None for v in chunk) else float(f"{sum(chunk) / len(chunk):.5g}"))
        ends.append(start + len(chunk))
    return values, ends


def _first_bn(model):
    return next((m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)), None)


def batch_statistics_distance(model, x: torch.Tensor, batch_size: int, batches: int = 50, seed: int = 0) -> dict:
    """How far one batch's statistics lie from the running ones, at the first BN layer.

    ``batches`` batches of ``batch_size`` images are drawn from ``x`` (without replacement
    within a batch, seeded); a forward pre-hook on the first ``nn.BatchNorm2d`` reads its input
    while the model runs in eval mode under ``no_grad`` (nothing changes: no running statistic
    is updated, the mode is restored). Per batch: the per-channel mean and biased variance over
    (N, H, W), what BN normalizes with in training mode.

    Returns
    -------
    dict
        ``mean_distance``: mean over channels and batches of
        ``|batch_mean - running_mean| / sqrt(running_var + eps)``; ``var_ratio``: mean of
        ``batch_var / running_var``; ``batches``.
    """
    bn = _first_bn(model)
    if bn is None:
        raise ValueError("the model has no nn.BatchNorm2d")
    distances, ratios = [], []

    def hook(module, inputs):
        z = inputs[0].detach().float()
        mean = z.mean(dim=(0, 2, 3))
        var = z.var(dim=(0, 2, 3), unbiased=False)
        rm, rv = module.running_mean.float(), module.running_var.float()
        distances.append(((mean - rm).abs() / torch.sqrt(rv + module.eps)).mean())
        ratios.append((var / rv).mean())

    modes = [(m, m.training) for m in model.modules()]
    generator = torch.Generator().manual_seed(seed)
    handle = bn.register_forward_pre_hook(hook)
    model.eval()
    try:
        with torch.no_grad():
            for _ in range(batches):
                idx = torch.randperm(x.shape[0], generator=generator)[:batch_size].to(x.device)
                model(x[idx])
    finally:
        handle.remove()
        for m, mode in modes:
            m.training = mode
    return {"mean_distance": round(float(torch.stack(distances).mean()), 5),
            "var_ratio": round(float(torch.stack(ratios).mean()), 5), "batches": batches}


def precise_bn(model, x: torch.Tensor, images: int, batch_size: int = 256, seed: int = 0):
    """A copy of ``model`` whose BN running statistics are recomputed as plain averages.

    ``torch.optim.swa_utils.update_bn`` (momentum None: the cumulative average of the batch
    means and unbiased batch variances) over the first ``images`` of a seeded permutation of
    ``x``, in batches of ``batch_size``. The original model is untouched.
    """
    copy_ = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(x.shape[0], generator=generator)[:images].to(x.device)
    loader = list(x[order].split(batch_size))
    with torch.no_grad():
        torch.optim.swa_utils.update_bn(loader, copy_)
    copy_.eval()
    return copy_


def exp_small_batch(cfg, data, device, hooks, progress):
    evaluate = hooks.get("evaluate") or _ref("evaluate")
    n = data.x_train.shape[0]
    groups = gn_groups_for(cfg["width"], cfg["gn_groups"])
    runs = []
    for norm in cfg["norms"]:
        for bs in cfg["batch_sizes"]:
            epochs = math.ceil(cfg["max_steps"] / steps_per_epoch(n, bs))
            model = build_norm_model(norm, cfg["width"], cfg["seed"], hooks.get("make_cnn"), cfg["gn_groups"])
            tc = _train_config(cfg, use_bn=norm == "bn", batch_size=bs, epochs=epochs)
            h, model = train(tc, data, device, model=model, evaluate=evaluate, progress=progress,
                             desc=f"{norm} batch={bs}", return_model=True)
            loss, loss_steps = _subsample_loss(h["step_loss"], cfg["loss_points"])
            r = {"norm": norm, "batch_size": bs, "lr": cfg["lr"], "epochs": epochs}
            for k in ("steps", "final_test_acc", "final_train_acc", "diverged", "diverged_at_step",
                      "images_per_s", "train_time_s"):
                r[k] = h[k]
            r["epoch_test_acc"] = h["epoch_test_acc"]
            r["epoch_end_step"] = h["epoch_end_step"]
            r["step_loss"] = loss
            r["step_loss_end_step"] = loss_steps
            if norm == "bn":
                r.update(train_mode_test_acc=None, mean_distance=None, var_ratio=None, precise_bn_test_acc=None)
                if not h["diverged"]:
                    model = model.float()
                    r["train_mode_test_acc"] = round(
                        evaluate_in_train_mode(copy.deepcopy(model), data.x_test, data.y_test, bs), 5)
                    stats = batch_statistics_distance(model, data.x_train, bs, cfg["stat_batches"], cfg["seed"])
                    r["mean_distance"], r["var_ratio"] = stats["mean_distance"], stats["var_ratio"]
                    images = min(int(cfg["precise_bn_images"]), n)
                    precise = precise_bn(model, data.x_train, images, cfg["precise_bn_batch"], cfg["seed"])
                    r["precise_bn_test_acc"] = round(
                        float(evaluate(precise, data.x_test, data.y_test, cfg["eval_batch_size"])), 5)
            runs.append(r)
    scalars = ("norm", "batch_size", "steps", "final_test_acc", "final_train_acc", "diverged", "diverged_at_step",
               "images_per_s", "train_time_s", "train_mode_test_acc", "mean_distance", "var_ratio",
               "precise_bn_test_acc")
    table = [{k: r[k] for k in scalars if k in r} for r in runs]
    return {"runs": runs, "table": table, "gn_groups": groups,
            "note": f"every run: {cfg['max_steps']} steps of SGD (onecycle, peak lr {cfg['lr']}) whatever the "
                    f"batch size; step_loss: means over consecutive windows of steps ending at "
                    f"step_loss_end_step; BN's mean_distance and var_ratio at the first BN layer over "
                    f"{cfg['stat_batches']} training batches of the training size (eval mode, nothing updated); "
                    f"precise_bn_test_acc after update_bn (momentum None) over "
                    f"{min(int(cfg['precise_bn_images']), n)} training images in batches of "
                    f"{cfg['precise_bn_batch']}"}


def _fold_reference():
    from solutions import ch06_beyond

    return ch06_beyond.fold_batchnorm


def fold_model(model: torch.nn.Module, fold=None) -> torch.nn.Module:
    """A copy of the eval-mode ``model`` with every convolution followed by BN folded by ``fold``.

    ``fold(weight, bias, gamma, beta, running_mean, running_var, eps) -> (new_weight, new_bias)``
    takes and returns NumPy arrays (``bias`` None for a convolution without bias; default: the
    course's reference ``fold_batchnorm``). Each ``nn.Conv2d`` directly followed by an
    ``nn.BatchNorm2d`` inside an ``nn.Sequential`` becomes a convolution with bias whose weight
    and bias are ``fold``'s, and the BN layer an ``nn.Identity``.
    """
    fold = fold or _fold_reference()
    model = copy.deepcopy(model).eval()
    folded = 0

    def visit(module):
        nonlocal folded
        children = list(module.named_children())
        for (name, child), (next_name, nxt) in zip(children, children[1:] + [(None, None)]):
            if isinstance(module, torch.nn.Sequential) and isinstance(child, torch.nn.Conv2d) \
                    and isinstance(nxt, torch.nn.BatchNorm2d):
                to_np = lambda t: t.detach().cpu().numpy()  # noqa: E731
                w, b = fold(to_np(child.weight), None if child.bias is None else to_np(child.bias),
                            to_np(nxt.weight), to_np(nxt.bias), to_np(nxt.running_mean), to_np(nxt.running_var),
                            nxt.eps)
                conv = torch.nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride,
                                       child.padding, child.dilation, child.groups, bias=True,
                                       padding_mode=child.padding_mode)
                conv = conv.to(device=child.weight.device, dtype=child.weight.dtype)
                with torch.no_grad():
                    conv.weight.copy_(torch.as_tensor(np.asarray(w)).reshape(conv.weight.shape))
                    conv.bias.copy_(torch.as_tensor(np.asarray(b)).reshape(conv.bias.shape))
                setattr(module, name, conv.eval())
                setattr(module, next_name, torch.nn.Identity())
                folded += 1
            elif not isinstance(child, (torch.nn.Conv2d, torch.nn.BatchNorm2d)):
                visit(child)

    visit(model)
    model.folded_layers = folded
    return model


def _time_inference(models: dict, x: torch.Tensor, min_run_time: float, rounds: int, threads: int) -> dict:
    """Per model, the per-call times (s) of ``rounds`` blocked_autorange measurements taken in turns."""
    from torch.utils import benchmark

    times = {name: [] for name in models}
    with torch.no_grad():
        for _ in range(rounds):
            for name, model in models.items():
                timer = benchmark.Timer(stmt="model(x)", globals={"model": model, "x": x}, num_threads=threads,
                                        label="folding", sub_label=name, description=str(x.shape[0]))
                times[name].extend(timer.blocked_autorange(min_run_time=min_run_time).times)
    return times


def exp_folding(cfg, data, device, hooks, progress):
    from torch.fx.experimental.optimization import fuse as fx_fuse

    evaluate = hooks.get("evaluate") or _ref("evaluate")
    make_cnn = hooks.get("make_cnn") or _ref("make_cnn")
    torch.manual_seed(cfg["seed"])
    model = make_cnn(True, width=cfg["width"])
    tc = _train_config(cfg, use_bn=True, batch_size=cfg["train_batch"], max_steps=cfg["train_steps"], epochs=1,
                       channels_last=False, amp=False)
    h, model = train(tc, data, device, model=model, evaluate=evaluate, progress=progress, desc="BN (to fold)",
                     return_model=True)
    model = model.float().eval()
    variants = {"unfolded": model, "fx": fx_fuse(model).eval(), "fold": fold_model(model, hooks.get("fold"))}
    bn_left = {k: sum(isinstance(m, torch.nn.BatchNorm2d) for m in v.modules()) for k, v in variants.items()}
    x_diff = data.x_test[:cfg["diff_batch"]]
    with torch.no_grad():
        ref = model(x_diff)
        diffs = {k: float((variants[k](x_diff) - ref).abs().max()) for k in ("fx", "fold")}
        logit_scale = float(ref.abs().max())
    previous = torch.get_num_threads()
    threads = int(cfg["timing_threads"])
    torch.set_num_threads(threads)
    try:
        measured_threads = torch.get_num_threads()
        timing, speedup = [], {k: {} for k in variants}
        for bs in cfg["timing_batch_sizes"]:
            x = data.x_test[:bs]
            if x.shape[0] < bs:       # fewer test images than the batch: repeat them
                x = x.repeat(math.ceil(bs / x.shape[0]), 1, 1, 1)[:bs]
            times = _time_inference(variants, x, cfg["min_run_time"], cfg["timing_rounds"], threads)
            medians = {}
            for name, ts in times.items():
                ms = np.asarray(ts) * 1e3
                q1, med, q3 = np.percentile(ms, [25, 50, 75])
                medians[name] = med
                timing.append({"variant": name, "batch_size": bs, "median_ms": round(float(med), 5),
                               "iqr_ms": round(float(q3 - q1), 5), "measurements": len(ts)})
            for name in variants:
                speedup[name][str(bs)] = round(float(medians["unfolded"] / medians[name]), 4)
    finally:
        torch.set_num_threads(previous)
    return {
        "training": {k: h[k] for k in ("steps", "final_test_acc", "final_train_acc", "diverged", "train_time_s")},
        "eval_mode_test_acc": round(float(evaluate(model, data.x_test, data.y_test, 1000)), 5),
        "folded_test_acc": round(float(evaluate(variants["fold"], data.x_test, data.y_test, 1000)), 5),
        "bn_layers_left": bn_left,
        "max_abs_logit_diff": diffs,
        "max_abs_logit": logit_scale,
        "timing": timing,
        "speedup": speedup,
        "threads": measured_threads,
        "note": f"the BN CNN trained for {h['steps']} steps (batch {cfg['train_batch']}, onecycle, peak lr "
                f"{cfg['lr']}) for realistic running statistics, then in eval mode; logit differences vs unfolded "
                f"in float32 on {x_diff.shape[0]} test images; times per forward pass of one batch under no_grad "
                f"from torch.utils.benchmark.Timer.blocked_autorange(min_run_time={cfg['min_run_time']}), "
                f"{cfg['timing_rounds']} rounds with the variants in turns, median and IQR of the pooled "
                f"measurements; speedup = unfolded median / variant median",
    }


RUNNERS = {"lr_sweep": exp_lr_sweep, "init_scale": exp_init_scale, "batch_size": exp_batch_size,
           "eval_bug": exp_eval_bug, "custom_bn": exp_custom_bn, "small_batch": exp_small_batch,
           "folding": exp_folding, "percentiles": covariate_shift.exp_percentiles,
           "noisy_bn": covariate_shift.exp_noisy_bn, "ics": covariate_shift.exp_ics,
           "landscape": covariate_shift.exp_landscape, "gamma_beta": covariate_shift.exp_gamma_beta,
           "depth_growth": covariate_shift.exp_depth_growth}
# where each hook's reference lives (what a result names when the reference ran)
HOOK_REFERENCES = {"fold": "solutions.ch06_beyond", "measure_ics": "solutions.ch05_covariate_shift",
                   "landscape_along_gradient": "solutions.ch05_covariate_shift",
                   "noisy_bn": "solutions.ch05_covariate_shift (NoisyBatchNorm2d)"}


def _ref(name):
    from solutions import ch04_cnn

    return getattr(ch04_cnn, name)


def _describe(fn, reference: str = "solutions.ch04_cnn"):
    if fn is None:
        return f"reference ({reference})"
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def run(name: str, quick: bool = True, *, profile: str | None = None, device="auto", seed: int = 0,
        progress: bool = False, out: Path | str | None = None, data=None, make_cnn=None, evaluate=None,
        bn_module=None, bn_function=None, fold=None, measure_ics=None, landscape_along_gradient=None,
        noisy_bn=None, data_root=None, **overrides) -> dict:
    """Run experiment ``name`` and return its result (the JSON document as a dict).

    Parameters
    ----------
    name : str
        One of ``lr_sweep``, ``init_scale``, ``batch_size``, ``eval_bug``, ``custom_bn``
        (chapter 4), ``percentiles``, ``noisy_bn``, ``ics``, ``landscape``, ``gamma_beta``,
        ``depth_growth`` (chapter 5), ``small_batch``, ``folding`` (chapter 6).
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
        Directory to write ``<chapter>_<name>.json`` into (``ch04_lr_sweep.json``,
        ``ch06_folding.json``, ...); None writes nothing.
    data : bnlab.train.Data, optional
        Data already on the device (else Fashion-MNIST is loaded with the profile's subset
        sizes).
    make_cnn, evaluate, bn_module, bn_function, fold, measure_ics, landscape_along_gradient, noisy_bn : optional
        Implementations to use instead of the course's reference (a chapter passes the
        student's). ``bn_module`` and ``bn_function`` serve chapter 4's experiments only;
        ``fold`` (``fold_batchnorm(weight, bias, gamma, beta, running_mean, running_var,
        eps)`` on NumPy arrays) the ``folding`` experiment only; ``measure_ics`` the ``ics``
        experiment, ``landscape_along_gradient`` the ``landscape`` experiment and ``noisy_bn``
        (a class like ``NoisyBatchNorm2d``, called with the number of channels) ``noisy_bn``.
    **overrides
        Changes to the configuration (e.g. ``train_size=2000``, ``lrs=[0.1]``).

    Returns
    -------
    dict
        ``experiment``, ``schema_version``, ``profile``, ``provenance`` (device, device_name,
        torch, cuda, date, wall_time_s, ...; no host name), ``config`` and ``results``.
    """
    if name not in RUNNERS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(ALL_NAMES)}")
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
    needs_data = EXPERIMENTS[name].get("needs_data", True)
    if data is None and needs_data:
        data = load_data(dev, cfg.get("train_size"), cfg.get("test_size"), seed=seed, root=data_root)
    elif data is not None and data.device != dev:
        raise ValueError(f"data is on {data.device}, the experiment runs on {dev}")
    hooks = {k: v for k, v in (("make_cnn", make_cnn), ("evaluate", evaluate), ("bn_module", bn_module),
                               ("bn_function", bn_function), ("fold", fold), ("measure_ics", measure_ics),
                               ("landscape_along_gradient", landscape_along_gradient), ("noisy_bn", noisy_bn))
             if v is not None}
    accepted = EXPERIMENTS[name].get("hooks", CH04_HOOKS)
    if set(hooks) - set(accepted):
        raise ValueError(f"{name} does not use {sorted(set(hooks) - set(accepted))}; it takes {', '.join(accepted)}")
    results = RUNNERS[name](cfg, data, dev, hooks, progress)
    wall = time.perf_counter() - t0
    cfg["data"] = dict(data.info) if data is not None else None
    cfg["implementations"] = {k: _describe(hooks.get(k), HOOK_REFERENCES.get(k, "solutions.ch04_cnn"))
                              for k in accepted}
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
        keys = {k: v for k, v in row.items() if k in ("norm", "use_bn", "lr", "init_scale", "batch_size", "variant")}
        acc = row["final_test_acc"]
        state = "DIVERGED" if row["diverged"] else f"test acc {acc:.4f}"
        extra = ""
        if row.get("train_mode_test_acc") is not None:
            extra = (f"; BN train mode {row['train_mode_test_acc']:.4f}, precise BN {row['precise_bn_test_acc']:.4f}, "
                     f"mean distance {row['mean_distance']:.3f}, var ratio {row['var_ratio']:.3f}")
        steps = f", {row['steps']} steps" if "norm" in row else ""
        lines.append(f"  {keys}: {state}{steps}, {row['images_per_s']} images/s{extra}")
    if "max_abs_logit_diff" in res:
        lines.append(f"  max |logit - unfolded|: {res['max_abs_logit_diff']}; BN layers left: {res['bn_layers_left']}")
        for row in res["timing"]:
            lines.append(f"  {row['variant']:>8} batch {row['batch_size']:>3}: {row['median_ms']:.4g} ms "
                         f"(IQR {row['iqr_ms']:.2g}), speed-up {res['speedup'][row['variant']][str(row['batch_size'])]:.2f}x "
                         f"[{res['threads']} thread(s)]")
    if "eval_mode_acc" in res:
        lines.append(f"  eval mode: {res['eval_mode_acc']:.4f}")
        for row in res["train_mode"]:
            lines.append(f"  train mode, batch {row['eval_batch_size']}: {row['train_mode_acc']:.4f}")
        lines.append(f"  train mode, class-sorted batches: {res['sorted']['train_mode_acc']:.4f}")
    if "step_time_ratio_to_torch" in res:
        lines.append(f"  step time / nn.BatchNorm2d: {res['step_time_ratio_to_torch']}")
    if result["experiment"] in covariate_shift.SUMMARIES:
        lines.extend(covariate_shift.SUMMARIES[result["experiment"]](res))
    return "\n".join(lines)


def select(selectors) -> list[str]:
    """The experiments named by ``selectors`` (names, ``ch04``, ``ch05``, ``ch06``, ``all``), in order,
    without repeats; ``list`` alone (or with ``all``) selects every experiment."""
    wanted = [w for w in selectors if w != "list"]
    if not wanted or "all" in wanted:
        return list(ALL_NAMES)
    names = []
    for item in wanted:
        if item in CHAPTER_NAMES:
            names.extend(CHAPTER_NAMES[item])
        elif item in EXPERIMENTS:
            names.append(item)
        else:
            raise ValueError(f"unknown experiment {item!r}; choose one of {', '.join(ALL_NAMES)}, "
                             f"{', '.join(CHAPTERS)} or all")
    return list(dict.fromkeys(names))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bnlab.experiments",
        description="The experiments of chapters 4, 5 and 6: a CNN on Fashion-MNIST with and without Batch "
                    "Normalization (chapter 4), the internal-covariate-shift debate reproduced (chapter 5), and BN against GroupNorm/LayerNorm at small batches and BN "
                    "folded at inference (chapter 6). Each writes results/<chapter>_<experiment>.json.",
        epilog="Experiments: " + "; ".join(f"{k} ({v['chapter']}): {v['doc']}" for k, v in EXPERIMENTS.items()),
    )
    parser.add_argument("experiment", nargs="+", choices=[*ALL_NAMES, *CHAPTERS, "all", "list"],
                        help="the experiments to run: names, 'ch04', 'ch05' or 'ch06' (that chapter's experiments), "
                             "'all' (every experiment of every chapter); 'list' prints the configurations "
                             "of the selected experiments (of all if none is named) instead of running them")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", dest="profile", action="store_const", const="quick",
                       help="small run for a CPU (default)")
    group.add_argument("--record-cpu", dest="profile", action="store_const", const="record-cpu",
                       help="the reduced configuration recorded on a 2-core CPU (chapter 4 about 25 minutes, "
                            "chapter 5 about 20, chapter 6 about 20); implies --device cpu")
    group.add_argument("--full", dest="profile", action="store_const", const="full",
                       help="whole data set (chapter 4: 15 epochs): meant for a GPU")
    parser.set_defaults(profile="quick")
    parser.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cuda, mps or cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None,
                        help="directory for <chapter>_<experiment>.json (default: results/ for --record-cpu and "
                             "--full; --quick writes nothing unless --out is given)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a configuration value (lists with commas), e.g. --set lrs=0.1,0.3")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    wanted = args.experiment
    names = select(wanted)
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
