"""Figures, tables and result-dependent sentences of chapter 5, drawn from experiment results
(the dicts of :func:`bnlab.experiments.run` or the recorded ``results/ch05_*.json``).

``plot_*`` return matplotlib Figures; ``table_*`` Markdown tables; ``describe_*`` Markdown bullet
lists whose every number is read from the result, so that the chapter's prose stays true when a
new run replaces the recorded one. Nothing here trains or measures.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from bnlab.covariate_shift import VARIANT_NAMES
from bnlab.plots import markdown_table, outcome

BN_COLORS = {False: "tab:red", True: "tab:blue"}
BN_NAMES = {False: "standard", True: "BN"}
VARIANT_COLORS = {"standard": "tab:red", "bn": "tab:blue", "noisy_bn": "tab:green", "standard_noise": "tab:orange"}


def _pct(value) -> str:
    return "diverged" if value is None else f"{100 * value:.1f}%"


def _array(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _band(ax, steps, rows, color, label=None):
    """Percentile rows (one list per step, low to high) as nested shaded bands and a median line."""
    q = np.array(rows, dtype=float)          # None (a non-finite value) becomes nan
    k = q.shape[1]
    for lo in range(k // 2):
        ax.fill_between(steps, q[:, lo], q[:, k - 1 - lo], color=color, alpha=0.18 + 0.12 * lo, lw=0)
    ax.plot(steps, q[:, k // 2], color=color, lw=1.5, label=label)


# ------------------------------------------------------------------- Ioffe & Szegedy Fig. 1


def _by_bn(runs):
    return {bool(r["use_bn"]): r for r in runs}


def plot_percentiles(result: dict):
    """(a) test accuracy over training, (b) and (c) the 15/50/85th percentiles of the sigmoid's
    input without and with BN (Ioffe & Szegedy's Fig. 1 layout)."""
    runs = _by_bn(result["results"]["runs"])
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for use_bn, r in runs.items():
        axes[0].plot(r["step"], 100 * _array(r["test_acc"]), color=BN_COLORS[use_bn],
                     label="with BN" if use_bn else "without BN")
    axes[0].set(xlabel="training step", ylabel="test accuracy (%)", title="(a) test accuracy")
    axes[0].legend(fontsize=8)
    low = min(np.nanmin(np.array(r["percentiles"], dtype=float)) for r in runs.values())
    high = max(np.nanmax(np.array(r["percentiles"], dtype=float)) for r in runs.values())
    for ax, use_bn, title in ((axes[1], False, "(b) without BN"), (axes[2], True, "(c) with BN")):
        if use_bn in runs:
            r = runs[use_bn]
            q = np.array(r["percentiles"], dtype=float)
            for j, p in enumerate(result["results"]["percentiles"]):
                ax.plot(r["step"], q[:, j], color=BN_COLORS[use_bn], lw=2 if j == 1 else 1,
                        ls="-" if j == 1 else "--", label=f"{p}th percentile")
        ax.set(xlabel="training step", ylabel="input of the sigmoid", title=title, ylim=(low - 0.2, high + 0.2))
        ax.legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def percentile_drift(run: dict) -> dict:
    """How much the distribution moved: the range (max - min) of the median over training and
    the first and last 15-85 spreads."""
    q = np.array(run["percentiles"], dtype=float)
    return {"median_range": float(np.ptp(q[:, 1])), "first": q[0].tolist(), "last": q[-1].tolist(),
            "spread_first": float(q[0, 2] - q[0, 0]), "spread_last": float(q[-1, 2] - q[-1, 0]),
            "spread_range": float(np.ptp(q[:, 2] - q[:, 0]))}


def describe_percentiles(result: dict) -> str:
    runs = _by_bn(result["results"]["runs"])
    lines = []
    steps = runs[True]["step"][-1] if True in runs else runs[False]["step"][-1]
    if len(runs) == 2:
        acc = {b: r["final_test_acc"] for b, r in runs.items()}
        early = {b: r["test_acc"][min(2, len(r["test_acc"]) - 1)] for b, r in runs.items()}
        step_early = runs[True]["step"][min(2, len(runs[True]["step"]) - 1)]
        lines.append(f"- After {steps:,} steps the test accuracy is {_pct(acc[True])} with BN and {_pct(acc[False])} "
                     f"without; after {step_early:,} steps it was {_pct(early[True])} and {_pct(early[False])}.")
    for use_bn, r in sorted(runs.items()):
        d = percentile_drift(r)
        lines.append(f"- {'With' if use_bn else 'Without'} BN the median of the sigmoid's input went from "
                     f"{d['first'][1]:+.2f} to {d['last'][1]:+.2f} (range over training {d['median_range']:.2f}); "
                     f"the 15–85 spread from {d['spread_first']:.2f} to {d['spread_last']:.2f} "
                     f"(range {d['spread_range']:.2f}).")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ noisy BN


def _lrs(result) -> list:
    return sorted({r["lr"] for r in result["results"]["runs"]})


def _variants(result, lr):
    return {r["variant"]: r for r in result["results"]["runs"] if r["lr"] == lr}


def plot_noisy_bn(result: dict, lr=None):
    """Top: training accuracy of each variant over training, one panel per learning rate. Bottom:
    the 5/15/50/85/95th percentiles of one channel's activations over training at ``lr`` (default:
    the smallest), one panel per variant; a diverged run says so."""
    lrs = _lrs(result)
    lr = min(lrs) if lr is None else lr
    runs = _variants(result, lr)
    fig = plt.figure(figsize=(12, 5.8))
    grid = fig.add_gridspec(2, len(lrs) * len(runs))
    span = len(runs)
    top = None
    for i, rate in enumerate(lrs):
        ax = fig.add_subplot(grid[0, i * span:(i + 1) * span], sharey=top)
        top = top or ax
        for kind, r in _variants(result, rate).items():
            ax.plot(r["step"], 100 * _array(r["train_acc"]), color=VARIANT_COLORS[kind], label=VARIANT_NAMES[kind])
        ax.set(xlabel="training step", title=f"training accuracy, lr {rate:g}")
        if i == 0:
            ax.set_ylabel("training accuracy (%)")
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    shared = None
    width = len(lrs)
    for j, (kind, r) in enumerate(runs.items()):
        ax = fig.add_subplot(grid[1, j * width:(j + 1) * width], sharey=shared)
        shared = shared or ax
        if r["diverged"]:
            ax.text(0.5, 0.5, f"diverged at step {r['diverged_at_step']}", transform=ax.transAxes, ha="center")
        else:
            _band(ax, r["step"], r["activation_percentiles"], VARIANT_COLORS[kind])
        ax.set(title=f"{VARIANT_NAMES[kind]}, lr {lr:g}", xlabel="training step")
        if j == 0:
            ax.set_ylabel("activation (one channel)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def instability(run: dict) -> float:
    """Mean absolute change of the activation median between successive recorded steps."""
    q = np.array(run["activation_percentiles"], dtype=float)
    return float(np.mean(np.abs(np.diff(q[:, q.shape[1] // 2])))) if len(q) > 1 else float("nan")


def table_noisy_bn(result: dict) -> str:
    rows = [[VARIANT_NAMES[k], f"{lr:g}", _pct(r["final_train_acc"]), _pct(r.get("mean_train_acc")),
             _pct(r["final_test_acc"]), f"{instability(r):.3f}"]
            for lr in _lrs(result) for k, r in _variants(result, lr).items()]
    return markdown_table(["network", "lr", "training accuracy (end)", "training accuracy (mean over training)",
                           "test accuracy", "mean change of the median between records"], rows)


# BN's advantage over the standard network (mean training accuracy over the run, in points) below
# which the noisy-BN comparison has nothing to measure
SMALL_ADVANTAGE = 0.02
# the three networks of Santurkar et al.'s comparison
COMPARED = ("standard", "bn", "noisy_bn")


def describe_noisy_bn(result: dict) -> str:
    lines = []
    for lr in _lrs(result):
        runs = _variants(result, lr)
        if not set(COMPARED) <= set(runs):
            continue
        speed = {k: runs[k].get("mean_train_acc") for k in ("bn", "noisy_bn", "standard")}
        end = {k: runs[k]["final_train_acc"] for k in ("bn", "noisy_bn", "standard")}
        if None in speed.values():
            diverged = [VARIANT_NAMES[k] for k, v in speed.items() if v is None]
            lines.append(f"- lr {lr:g}: {', '.join(diverged)} diverged.")
            continue
        lines.append(f"- lr {lr:g}: training accuracy at the end BN {_pct(end['bn'])}, noisy BN {_pct(end['noisy_bn'])}, "
                     f"standard {_pct(end['standard'])}; averaged over training (which also measures speed) "
                     f"{_pct(speed['bn'])}, {_pct(speed['noisy_bn'])} and {_pct(speed['standard'])}.")
        advantage = speed["bn"] - speed["standard"]
        if advantage >= SMALL_ADVANTAGE:
            kept = (speed["noisy_bn"] - speed["standard"]) / advantage
            lines.append(f"  BN is {100 * advantage:.1f} points ahead of the standard network on average; noisy BN "
                         f"keeps {100 * kept:.0f}% of that advantage (Santurkar et al.: the gap between BN and noisy "
                         f"BN is \"almost non-existent\").")
        else:
            lines.append(f"  BN is only {100 * advantage:+.1f} points ahead of the standard network on average, too "
                         f"little for the noise to remove: this learning rate cannot test the claim.")
        # a network at chance does not train: its activations stand still, which is not stability
        stuck = [k for k in COMPARED if outcome(runs[k]) == "chance"]
        order = sorted((k for k in COMPARED if k not in stuck), key=lambda k: instability(runs[k]))
        moves = ", ".join(f"{instability(runs[k]):.3f} ({VARIANT_NAMES[k]}{', at chance' if k in stuck else ''})"
                          for k in COMPARED)
        ranking = (f": of the networks that train, the most stable is {VARIANT_NAMES[order[0]]}, the least "
                   f"{VARIANT_NAMES[order[-1]]}" if len(order) >= 2 else "")
        lines.append(f"  The median of the channel's activation moves, on average between two records, by {moves}"
                     f"{ranking}.")
        if "standard_noise" in runs:
            r = runs["standard_noise"]
            if r["diverged"]:
                lines.append(f"  The same noise without BN: the run diverged at step {r['diverged_at_step']}.")
            else:
                lines.append(f"  The same noise without BN: training accuracy {_pct(r['final_train_acc'])} at the "
                             f"end (standard network {_pct(end['standard'])}).")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- ICS


def _ics_panels(runs, layers, title_of, log_l2=True):
    fig, axes = plt.subplots(2, len(layers), figsize=(3.8 * len(layers), 5.6), squeeze=False)
    lrs = sorted({r["lr"] for r in runs}, reverse=True)
    styles = {lr: ("-", "--", ":")[k % 3] for k, lr in enumerate(lrs)}
    for j, layer in enumerate(layers):
        for r in runs:
            key = str(layer)
            label = f"{BN_NAMES[bool(r['use_bn'])]}, lr {r['lr']:g}"
            kw = dict(color=BN_COLORS[bool(r["use_bn"])], ls=styles[r["lr"]], label=label, lw=1.2)
            axes[0, j].plot(r["step"], _array(r["l2"][key]), **kw)
            axes[1, j].plot(r["step"], _array(r["cosine"][key]), **kw)
        axes[0, j].set(title=title_of(layer), ylabel=r"$\|G - G'\|_2$" if j == 0 else None)
        if log_l2:
            axes[0, j].set_yscale("log")
        axes[1, j].set(xlabel="training step", ylabel=r"$\cos(G, G')$" if j == 0 else None, ylim=(-1.05, 1.05))
        for ax in axes[:, j]:
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


CNN_LAYER_NAMES = ("conv1", "conv2", "conv3", "conv4", "classifier")


def plot_ics_cnn(result: dict):
    """ICS of the CNN: l2 distance (top, log) and cosine (bottom) of G and G' over training, one
    column per measured layer; standard (red) and BN (blue), one line style per learning rate."""
    res = result["results"]
    layers = result["config"]["layers"]
    return _ics_panels(res["cnn"], layers, lambda k: f"layer {k + 1} ({CNN_LAYER_NAMES[k]})")


def plot_ics_dln(result: dict):
    """The same for the 25-layer deep linear network."""
    layers = result["config"]["dln_layers"]
    return _ics_panels(result["results"]["dln"], layers, lambda k: f"DLN layer {k + 1}")


def ics_summary(run: dict, layer) -> dict:
    """Medians over training of cos(G, G'), ||G - G'|| and ||G - G'|| / ||G|| for one layer."""
    key = str(layer)
    l2, cos, norm = _array(run["l2"][key]), _array(run["cosine"][key]), _array(run["grad_norm"][key])
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(norm > 0, l2 / norm, np.nan)
    return {"cosine": float(np.nanmedian(cos)), "l2": float(np.nanmedian(l2)), "relative": float(np.nanmedian(rel)),
            "min_cosine": float(np.nanmin(cos))}


def table_ics(result: dict, part: str = "cnn") -> str:
    res, cfg = result["results"], result["config"]
    layers = cfg["layers"] if part == "cnn" else cfg["dln_layers"]
    name = (lambda k: CNN_LAYER_NAMES[k]) if part == "cnn" else (lambda k: f"layer {k + 1}")
    rows = []
    for r in res[part]:
        for k in layers:
            s = ics_summary(r, k)
            rows.append([BN_NAMES[bool(r["use_bn"])], f"{r['lr']:g}", name(k), f"{s['l2']:.3g}",
                         f"{s['relative']:.3f}", f"{s['cosine']:.3f}", f"{s['min_cosine']:.3f}"])
    return markdown_table(["network", "lr", "layer", "median ‖G − G′‖", "median ‖G − G′‖/‖G‖",
                           "median cos", "lowest cos"], rows)


def describe_ics(result: dict) -> str:
    res, cfg = result["results"], result["config"]
    lines = []
    for lr in sorted({r["lr"] for r in res["cnn"]}, reverse=True):
        pair = {bool(r["use_bn"]): r for r in res["cnn"] if r["lr"] == lr}
        if len(pair) < 2:
            continue
        parts, larger = [], 0
        for k in cfg["layers"]:
            s = {b: ics_summary(pair[b], k) for b in (False, True)}
            larger += s[True]["relative"] > s[False]["relative"]
            parts.append(f"{CNN_LAYER_NAMES[k]}: relative ICS {s[True]['relative']:.3f} with BN vs "
                         f"{s[False]['relative']:.3f} without, cosine {s[True]['cosine']:.3f} vs {s[False]['cosine']:.3f}")
        verdict = ("larger with BN in every measured layer" if larger == len(cfg["layers"]) else
                   "smaller with BN in every measured layer" if larger == 0 else
                   f"larger with BN in {larger} of {len(cfg['layers'])} measured layers")
        lines.append(f"- CNN at lr {lr:g} (medians over training): " + "; ".join(parts) + f". The ICS is {verdict}.")
    for lr in sorted({r["lr"] for r in res["dln"]}, reverse=True):
        pair = {bool(r["use_bn"]): r for r in res["dln"] if r["lr"] == lr}
        if len(pair) < 2:
            continue
        cos = {b: [ics_summary(pair[b], k)["cosine"] for k in cfg["dln_layers"]] for b in (False, True)}
        agrees = min(cos[False]) > 0.9 and min(cos[True]) < 0.5
        lines.append(f"- Deep linear network at lr {lr:g}: median cosine of G and G′ between {min(cos[False]):.3f} "
                     f"and {max(cos[False]):.3f} without BN, between {min(cos[True]):.3f} and {max(cos[True]):.3f} "
                     f"with BN (layers " + ", ".join(str(k + 1) for k in cfg["dln_layers"]) + "). "
                     + ("As in the paper, the gradient hardly changes without BN, while with BN it loses its "
                        "direction in the deeper layers." if agrees else
                        "This run does not show the paper's contrast (cosine above 0.9 without BN, far below "
                        "with BN)."))
    return "\n".join(lines)


# ---------------------------------------------------------------------------- landscape


def plot_landscape(result: dict):
    """(a) range of the loss along the gradient, (b) range of ||grad L(w_c) - g|| (gradient
    predictiveness), (c) effective beta-smoothness, over training; standard and BN."""
    runs = _by_bn(result["results"]["runs"])
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for use_bn, r in runs.items():
        color, label = BN_COLORS[use_bn], BN_NAMES[use_bn]
        axes[0].fill_between(r["step"], _array(r["loss_min"]), _array(r["loss_max"]), color=color, alpha=0.35,
                             label=label)
        axes[1].fill_between(r["step"], _array(r["grad_distance_min"]), _array(r["grad_distance_max"]), color=color,
                             alpha=0.35, label=label)
        axes[2].plot(r["step"], _array(r["beta_smoothness"]), color=color, label=label)
    axes[0].set(title="(a) loss along the gradient", ylabel="loss", yscale="log")
    axes[1].set(title=r"(b) gradient predictiveness $\|\nabla L(w_c) - g\|$", yscale="log")
    axes[2].set(title=r"(c) effective $\beta$-smoothness", yscale="log")
    for ax in axes:
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def landscape_summary(run: dict) -> dict:
    """Medians over training of the loss range, the largest gradient change and beta."""
    spread = _array(run["loss_max"]) - _array(run["loss_min"])
    return {"loss_range": float(np.nanmedian(spread)), "grad_change": float(np.nanmedian(_array(run["grad_distance_max"]))),
            "beta": float(np.nanmedian(_array(run["beta_smoothness"])))}


def describe_landscape(result: dict) -> str:
    runs = _by_bn(result["results"]["runs"])
    if len(runs) < 2:
        return ""
    s = {b: landscape_summary(r) for b, r in runs.items()}
    ratio = {k: s[False][k] / s[True][k] if s[True][k] > 0 else float("inf") for k in s[True]}
    c = result["results"]["multipliers"]
    return "\n".join([
        f"- Along the gradient (steps of {min(c):g} to {max(c):g} times the learning rate), the loss varies by "
        f"{s[False]['loss_range']:.3g} without BN and {s[True]['loss_range']:.3g} with BN (medians over training): "
        f"{ratio['loss_range']:.1f}× more without.",
        f"- The gradient changes by up to {s[False]['grad_change']:.3g} without BN and {s[True]['grad_change']:.3g} "
        f"with BN ({ratio['grad_change']:.1f}×); the effective β-smoothness is {s[False]['beta']:.3g} and "
        f"{s[True]['beta']:.3g} ({ratio['beta']:.1f}×).",
        f"- Test accuracy at the end: {_pct(runs[True]['final_test_acc'])} with BN, "
        f"{_pct(runs[False]['final_test_acc'])} without."])


# ------------------------------------------------------------------------ gamma/beta only


TRAINED_NAMES = {"all": "all parameters", "bn_only": "only BN's γ and β", "classifier_only": "only the classifier"}
TRAINED_COLORS = {"all": "tab:blue", "bn_only": "tab:green", "classifier_only": "tab:purple"}


def plot_gamma_beta(result: dict):
    """Left: training loss of each choice of trained parameters. Right: test accuracy, with chance."""
    from bnlab.plots import smooth

    runs = result["results"]["runs"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), gridspec_kw={"width_ratios": [3, 2]})
    for r in runs:
        axes[0].plot(r["loss"]["steps"], smooth(r["loss"]["values"]), color=TRAINED_COLORS[r["trained"]],
                     label=f"{TRAINED_NAMES[r['trained']]} ({r['trainable_parameters']:,} parameters)")
    axes[0].set(xlabel="training step", ylabel="training loss (moving average)")
    axes[0].legend(fontsize=8)
    names = [TRAINED_NAMES[r["trained"]] for r in runs]
    accs = [100 * (r["final_test_acc"] or 0) for r in runs]
    axes[1].barh(names, accs, color=[TRAINED_COLORS[r["trained"]] for r in runs])
    axes[1].axvline(100 * result["results"]["chance"], color="k", ls="--", label="chance")
    axes[1].set(xlabel="test accuracy (%)", xlim=(0, 100))
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def describe_gamma_beta(result: dict) -> str:
    runs = {r["trained"]: r for r in result["results"]["runs"]}
    lines = []
    for k, r in runs.items():
        share = r["trainable_parameters"] / r["total_parameters"]
        lines.append(f"- Training {TRAINED_NAMES[k]} ({r['trainable_parameters']:,} of {r['total_parameters']:,} "
                     f"parameters, {100 * share:.1f}%): test accuracy {_pct(r['final_test_acc'])} "
                     f"(learning rate {r['lr']:g}).")
    cfg = result["config"]
    lines.append(f"- Each run: SGD with momentum {cfg['momentum']:g}, batch {cfg['batch_size']}, "
                 f"{cfg['steps']:,} steps.")
    if "bn_only" in runs:
        r = runs["bn_only"]
        lines.append(f"- After γ/β-only training {100 * r['small_gamma_fraction']:.1f}% of the channels have "
                     f"|γ| < {result['config']['small_gamma']:g} (all start at γ = 1); the median |γ| is "
                     f"{r['gamma_abs_percentiles'][2]:.2f}.")
    return "\n".join(lines)


# ------------------------------------------------------------------ growth at initialization


def plot_depth_growth(result: dict):
    """Left: ||dL/dW_l|| per layer of the plain MLPs at initialization, with BN (one line per batch
    size) and without, and Yang et al.'s rate. Right: mean square of x after each residual block,
    with the predictions 2^l (no BN) and 1 + l (BN at the end of the branch)."""
    res = result["results"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    blues, reds = plt.cm.Blues, plt.cm.Reds
    batches = sorted({g["batch_size"] for g in res["gradients"]})
    for g in res["gradients"]:
        shade = 0.4 + 0.6 * batches.index(g["batch_size"]) / max(1, len(batches) - 1)
        color = (blues if g["use_bn"] else reds)(shade)
        layers = np.arange(1, len(g["grad_norms"]) + 1)
        axes[0].plot(layers, g["grad_norms"], color=color,
                     label=f"{'BN' if g['use_bn'] else 'no BN'}, batch {g['batch_size']}: ×{g['factor_per_layer']:.3f}")
    bn_last = [g for g in res["gradients"] if g["use_bn"]]
    if bn_last:
        g = bn_last[-1]
        n = len(g["grad_norms"])
        axes[0].plot(np.arange(1, n + 1), g["grad_norms"][-1] * res["yang_factor"] ** (n - np.arange(1, n + 1)),
                     "k:", label=f"Yang et al.: ×{res['yang_factor']:.3f} per layer")
    axes[0].set(yscale="log", xlabel="layer (1 = next to the input)", ylabel=r"$\|\partial L/\partial W_l\|$",
                title="deep plain MLP at initialization")
    axes[0].legend(fontsize=7)
    for r in res["residual"]:
        blocks = np.arange(len(r["second_moment"]))
        axes[1].plot(blocks, r["second_moment"], color=BN_COLORS[bool(r["use_bn"])],
                     label="BN in the branch" if r["use_bn"] else "no BN")
    m0 = res["residual"][0]["second_moment"][0]
    blocks = np.arange(len(res["residual"][0]["second_moment"]))
    axes[1].plot(blocks, m0 * 2.0 ** blocks, "k:", label=r"$2^l$")
    axes[1].plot(blocks, m0 + blocks, "k--", label=r"$1 + l$")
    axes[1].set(yscale="log", xlabel="residual block l", ylabel="mean square of x", title="residual MLP at initialization")
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def describe_depth_growth(result: dict) -> str:
    res = result["results"]
    bn = [g for g in res["gradients"] if g["use_bn"]]
    plain = [g for g in res["gradients"] if not g["use_bn"]]
    lines = []
    if bn:
        lines.append("- With BN the gradient norm grows toward the input by a factor of "
                     + ", ".join(f"{g['factor_per_layer']:.3f} (batch {g['batch_size']})" for g in bn)
                     + f" per layer; Yang et al.'s rate is √(π/(π−1)) = {res['yang_factor']:.3f}. Over "
                     f"{len(bn[-1]['grad_norms'])} layers that is a ratio of "
                     f"{bn[-1]['grad_norms'][0] / bn[-1]['grad_norms'][-1]:,.0f} between the first and the last layer.")
    if plain:
        lines.append("- Without BN (He initialization) the factor is "
                     + ", ".join(f"{g['factor_per_layer']:.3f} (batch {g['batch_size']})" for g in plain) + ".")
    for r in res["residual"]:
        m = r["second_moment"]
        lines.append(f"- Residual blocks {'with BN in the branch' if r['use_bn'] else 'without BN'}: the mean square "
                     f"of the activations goes from {m[0]:.3g} to {m[-1]:.3g} after {len(m) - 1} blocks "
                     f"(prediction {'1 + l' if r['use_bn'] else '2^l'}: "
                     f"{(m[0] + len(m) - 1) if r['use_bn'] else m[0] * 2.0 ** (len(m) - 1):.3g}).")
    return "\n".join(lines)
