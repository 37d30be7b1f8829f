"""Figures and tables of chapter 4, drawn from experiment results (the dicts of
:func:`bnlab.experiments.run` or the recorded ``results/ch04_*.json``).

One ``plot_<experiment>(result)`` per experiment returns a matplotlib Figure; ``table_<experiment>``
returns a Markdown table (display it with ``IPython.display.Markdown``). Nothing here trains or
measures: every number comes from the result.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

BN_COLOR = "tab:blue"
NO_BN_COLOR = "tab:red"


def source_label(result: dict) -> str:
    """Where a result comes from: profile, device, threads and date, e.g. for a figure title."""
    prov = result.get("provenance", {})
    device = prov.get("device", "?")
    name = prov.get("device_name") or device
    where = f"{device.upper()}: {name}" if device == "cpu" else f"{device.upper()} {name}"
    threads = f", {prov['torch_threads']} thread{'s' if prov['torch_threads'] != 1 else ''}" \
        if device == "cpu" and prov.get("torch_threads") else ""
    date = (prov.get("date") or "")[:10]
    return f"{result.get('profile', '?')} run, {where}{threads}, {date}".strip(", ")


def describe_recordings(results: dict) -> str:
    """One paragraph on where the recorded results come from: how many exist, which were
    measured on a GPU (and which one), which on a CPU and with which profile.

    ``results`` maps experiment names to recorded results or None (not recorded). The text is
    made from the provenance alone, so that it changes when a GPU run replaces a CPU one.
    """
    available = {name: r for name, r in results.items() if r is not None}
    missing = sorted(set(results) - set(available))
    if not available:
        return "No experiment has been recorded yet: the chapters show their live runs only."
    gpu = {n: r for n, r in available.items() if r["provenance"].get("device") in ("cuda", "mps")}
    cpu = {n: r for n, r in available.items() if n not in gpu}
    parts = []
    if gpu:
        names = sorted({r["provenance"].get("device_name") or r["provenance"]["device"] for r in gpu.values()})
        parts.append(f"{len(gpu)} of the {len(available)} recorded experiments ran on a GPU ({', '.join(names)}; "
                     f"profile {', '.join(sorted({r['profile'] for r in gpu.values()}))}: "
                     f"{', '.join(sorted(gpu))}).")
    if cpu:
        profiles = sorted({r["profile"] for r in cpu.values()})
        what = f"All {len(cpu)}" if not gpu else f"{len(cpu)} of the {len(available)}"
        parts.append(f"{what} recorded experiments ran on a CPU, with the {' and '.join(profiles)} configuration"
                     + (" (reduced data and epochs: they show effects, not final accuracies)"
                        if "full" not in profiles else "") + ".")
        if not gpu:
            parts.append("No GPU result has been recorded yet.")
    if missing:
        parts.append(f"Not recorded: {', '.join(missing)}.")
    return " ".join(parts)


def load_label(prov: dict) -> str:
    """The machine's 1-minute load average at the start and the end of a run, e.g. ``"0.6 → 3.1"``."""
    start, end = prov.get("load_average_start"), prov.get("load_average")
    if not start or not end:
        return "not recorded"
    return f"{start[0]:.1f} → {end[0]:.1f}"


def table_provenance(results: dict) -> str:
    """One row per experiment: profile, machine, versions, git revision, load and wall time
    (``results`` maps experiment names to recorded results or None)."""
    rows = []
    for name, result in results.items():
        if result is None:
            rows.append([name, "not recorded", "", "", "", "", ""])
            continue
        prov = result["provenance"]
        rows.append([name, result["profile"], source_label(result).split(", ", 1)[1],
                     f"torch {prov['torch']}, CUDA {prov['cuda'] or '-'}", f"`{prov.get('git', '?')}`",
                     load_label(prov), f"{prov['wall_time_s'] / 60:.1f} min"])
    return markdown_table(["experiment", "profile", "measured on", "versions", "git revision",
                           "load (start → end)", "wall time"], rows)


def describe_provenance_caveats(results: dict) -> str:
    """Warnings about how recorded results were measured, made from their provenance: runs on a
    loaded machine and runs from a tree with uncommitted changes (``-dirty`` revisions, whose code
    the revision alone does not identify). Empty when there is nothing to warn about.

    A run's own threads count in the load average (and so does the previous experiment of the
    same command, in the start value), so a machine is called loaded when the load beyond the
    run's ``torch_threads`` exceeds half of its cores (without that number: when the load exceeds
    the cores): other processes then competed for them."""
    loaded, dirty = [], []
    for name, r in results.items():
        if r is None:
            continue
        prov = r["provenance"]
        cores = prov.get("cpu_count") or 1
        own = prov.get("torch_threads") or 0
        loads = [*(prov.get("load_average_start") or [])[:1], *(prov.get("load_average") or [])[:1]]
        if loads and (max(loads) - own > cores / 2 if own else max(loads) > cores):
            loaded.append(f"{name} ({max(loads):.1f} on {cores} cores, {own} of it its own threads)" if own
                          else f"{name} ({max(loads):.1f} on {cores} cores)")
        if str(prov.get("git", "")).endswith("-dirty"):
            dirty.append(name)
    lines = []
    if loaded:
        lines.append(f"- **Measured on a loaded machine**: {', '.join(loaded)}. Other processes competed for the "
                     "cores, so times and images/s are slower and noisier than the machine can do; accuracies "
                     "are not affected.")
    if dirty:
        lines.append(f"- **Recorded from a tree with uncommitted changes** (`-dirty`): {', '.join(dirty)}. The "
                     "revision names the last commit; the code that ran may differ from it.")
    return "\n".join(lines)


def _as_float(values) -> np.ndarray:
    """A recorded loss curve as floats (None, a non-finite loss saved as null, becomes NaN)."""
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def smooth(values, window: int | None = None) -> np.ndarray:
    """Moving average of a loss curve (None and non-finite values become NaN and are skipped)."""
    y = _as_float(values)
    if window is None:
        window = max(1, len(y) // 40)
    if window <= 1 or len(y) == 0:
        return y
    out = np.full_like(y, np.nan)
    for i in range(len(y)):
        chunk = y[max(0, i - window + 1):i + 1]
        chunk = chunk[np.isfinite(chunk)]
        if len(chunk) and np.isfinite(y[i]):
            out[i] = chunk.mean()
    return out


CHANCE = 0.15   # ten balanced classes: 10% is chance; at most 15% means "did not learn"


def _fmt_acc(value, diverged=False) -> str:
    if diverged:
        return "diverged"
    if value is None:
        return "-"
    return f"{100 * value:.1f}%" + (" (chance)" if value <= CHANCE else "")


def outcome(row: dict) -> str:
    """``"diverged"`` (non-finite loss), ``"chance"`` (finished at chance accuracy) or ``"trained"``."""
    if row.get("diverged"):
        return "diverged"
    acc = row.get("final_test_acc")
    return "chance" if acc is None or acc <= CHANCE else "trained"


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table (display it with IPython.display.Markdown)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


LOSS_CAP = 100.0  # losses above this (diverging runs) are drawn as markers on the top edge


def _shown_loss(step_loss, raw: bool) -> np.ndarray:
    """What a loss panel draws of one run: every step (``raw``) or the moving average."""
    return _as_float(step_loss) if raw else smooth(step_loss)


def _loss_limits(curves) -> tuple[float, float]:
    """Log-axis limits that show every finite positive value of ``curves`` up to ``LOSS_CAP``."""
    values = np.concatenate([np.asarray(c, dtype=float) for c in curves]) if curves else np.array([])
    finite = values[np.isfinite(values) & (values > 0) & (values <= LOSS_CAP)]
    if not finite.size:
        return 0.1, 3.0
    return finite.min() * 0.8, max(finite.max() * 1.3, 3.0)


def _loss_panel(ax, runs, label_of, color_of, style_of, x_of=None, limits=None, raw=True):
    """Loss curves of ``runs`` on a log axis: the moving average solid and, with ``raw``, every
    step faint, so that single-step spikes stay visible. Nothing is clipped away: a value above
    ``LOSS_CAP`` is marked on the top edge (^), a diverged run's last step with an x."""
    low, high = limits or _loss_limits([_shown_loss(h["step_loss"], raw) for h in runs])
    ax.set_yscale("log")
    ax.set_ylim(low, high)
    marked = False
    for h in runs:
        n = len(h["step_loss"])
        x = np.arange(1, n + 1) if x_of is None else np.asarray(x_of(h, n))
        shown = _shown_loss(h["step_loss"], raw)
        if raw:
            ax.plot(x, np.where(shown > LOSS_CAP, np.nan, shown), color=color_of(h), lw=0.6, alpha=0.3)
        line, = ax.plot(x, smooth(h["step_loss"]), color=color_of(h), linestyle=style_of(h), label=label_of(h),
                        lw=1.5)
        over = np.nan_to_num(shown, nan=0.0) > LOSS_CAP
        if over.any():
            ax.plot(x[over], np.full(int(over.sum()), high), "^", color=line.get_color(), ms=6, clip_on=False)
            marked = True
        if h.get("diverged") and n:
            step = min(h.get("diverged_at_step") or n, n - 1)
            ax.plot([x[step]], [high], marker="x", color=line.get_color(), ms=9, mew=2, clip_on=False)
    if marked:
        ax.plot([], [], "^", color="gray", label=f"loss > {LOSS_CAP:g}")
    ax.set_ylabel("training loss (log scale)" + ("" if raw else ", moving average"))
    ax.grid(alpha=0.3, which="both")


def _lr_colors(lrs):
    cmap = plt.get_cmap("viridis")
    lrs = sorted(set(lrs))
    return {lr: cmap(i / max(len(lrs) - 1, 1) * 0.9) for i, lr in enumerate(lrs)}


# --------------------------------------------------------------------------------------------


def plot_lr_sweep(result: dict):
    """Loss curves (left: BN, right: no BN) over the learning-rate grid, on a log axis that shows
    every spike; x marks divergence."""
    runs = result["results"]["runs"]
    colors = _lr_colors([h["lr"] for h in runs])
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    limits = _loss_limits([_shown_loss(h["step_loss"], raw=True) for h in runs])
    for ax, use_bn in zip(axes, (True, False)):
        sub = [h for h in runs if h["use_bn"] == use_bn]
        _loss_panel(ax, sub, lambda h: f"lr={h['lr']:g}" + (" (diverged)" if h["diverged"] else ""),
                    lambda h: colors[h["lr"]], lambda h: "-", limits=limits)
        ax.set_title("with BN" if use_bn else "without BN")
        ax.set_xlabel("training step")
        ax.legend(fontsize=8)
    fig.suptitle(f"Learning-rate sweep ({source_label(result)})", fontsize=10)
    fig.tight_layout()
    return fig


def table_lr_sweep(result: dict) -> str:
    """Final test accuracy per learning rate, BN vs no BN, and images per second."""
    table = result["results"]["table"]
    lrs = sorted({r["lr"] for r in table})
    rows = []
    for lr in lrs:
        row = [f"{lr:g}"]
        for use_bn in (True, False):
            r = next(r for r in table if r["lr"] == lr and r["use_bn"] == use_bn)
            row.append(_fmt_acc(r["final_test_acc"], r["diverged"]))
        rows.append(row)
    return markdown_table(["learning rate", "test accuracy with BN", "test accuracy without BN"], rows)


def plot_init_scale(result: dict):
    """Left: logit spread at initialization vs the scale s; right: final test accuracy vs s."""
    res = result["results"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for use_bn, color, label in ((True, BN_COLOR, "with BN"), (False, NO_BN_COLOR, "without BN")):
        pts = sorted((r["init_scale"], r["logit_std"]) for r in res["initial_logit_std"] if r["use_bn"] == use_bn)
        axes[0].loglog([p[0] for p in pts], [p[1] for p in pts], "o-", color=color, label=label)
        runs = sorted((h for h in res["runs"] if h["use_bn"] == use_bn), key=lambda h: h["init_scale"])
        xs = [h["init_scale"] for h in runs]
        accs = [np.nan if h["final_test_acc"] is None else 100 * h["final_test_acc"] for h in runs]
        axes[1].semilogx(xs, accs, "o-", color=color, label=label)
        for h in runs:
            if h["diverged"]:
                axes[1].plot([h["init_scale"]], [2], marker="x", color=color, ms=10, mew=2)
    axes[0].set_xlabel("initialization scale s (times He)")
    axes[0].set_ylabel("std of the initial logits")
    axes[0].set_title("forward pass at initialization")
    axes[1].set_xlabel("initialization scale s (times He)")
    axes[1].set_ylabel("test accuracy (%)")
    axes[1].set_ylim(0, 100)
    axes[1].axhline(10, color="gray", lw=0.8, ls=":")
    axes[1].set_title("after training (x: diverged)")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(f"Initialization scale ({source_label(result)})", fontsize=10)
    fig.tight_layout()
    return fig


def table_init_scale(result: dict) -> str:
    table = result["results"]["table"]
    scales = sorted({r["init_scale"] for r in table})
    rows = []
    for s in scales:
        row = [f"{s:g}"]
        for use_bn in (True, False):
            r = next(r for r in table if r["init_scale"] == s and r["use_bn"] == use_bn)
            row.append(_fmt_acc(r["final_test_acc"], r["diverged"]))
        rows.append(row)
    return markdown_table(["scale s", "test accuracy with BN", "test accuracy without BN"], rows)


def plot_batch_size(result: dict):
    """Left: final test accuracy vs batch size; right: training loss vs images seen."""
    runs = result["results"]["runs"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for use_bn, color, label in ((True, BN_COLOR, "with BN"), (False, NO_BN_COLOR, "without BN")):
        sub = sorted((h for h in runs if h["use_bn"] == use_bn), key=lambda h: h["batch_size"])
        xs = [h["batch_size"] for h in sub]
        accs = [np.nan if h["final_test_acc"] is None else 100 * h["final_test_acc"] for h in sub]
        axes[0].semilogx(xs, accs, "o-", color=color, label=label, base=2)
        for h in sub:
            if h["diverged"]:
                axes[0].plot([h["batch_size"]], [2], marker="x", color=color, ms=10, mew=2)
    cmap = plt.get_cmap("viridis")
    sizes = sorted({h["batch_size"] for h in runs})
    bn_runs = [h for h in runs if h["use_bn"]]
    _loss_panel(axes[1], bn_runs, lambda h: f"batch {h['batch_size']}",
                lambda h: cmap(sizes.index(h["batch_size"]) / max(len(sizes) - 1, 1) * 0.9), lambda h: "-",
                x_of=lambda h, n: np.arange(1, n + 1) * h["batch_size"], raw=False)
    axes[0].set_xlabel("batch size (learning rate scaled with it)")
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].set_ylim(0, 100)
    axes[0].set_title("after the same number of epochs")
    axes[1].set_xlabel("training images seen")
    axes[1].set_title("with BN")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(f"Batch size ({source_label(result)})", fontsize=10)
    fig.tight_layout()
    return fig


def table_batch_size(result: dict) -> str:
    table = result["results"]["table"]
    sizes = sorted({r["batch_size"] for r in table})
    rows = []
    for bs in sizes:
        r_bn = next(r for r in table if r["batch_size"] == bs and r["use_bn"])
        r_no = next(r for r in table if r["batch_size"] == bs and not r["use_bn"])
        rows.append([bs, f"{r_bn['lr']:.4g}", r_bn["steps"], _fmt_acc(r_bn["final_test_acc"], r_bn["diverged"]),
                     _fmt_acc(r_no["final_test_acc"], r_no["diverged"])])
    return markdown_table(["batch size", "learning rate", "steps", "test accuracy with BN", "test accuracy without BN"],
                     rows)


def plot_eval_bug(result: dict):
    """Test accuracy with model.eval() (correct) and without it, per evaluation batch size."""
    res = result["results"]
    rows = res["train_mode"]
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    xs = [r["eval_batch_size"] for r in rows]
    ax.semilogx(xs, [100 * r["train_mode_acc"] for r in rows], "o-", color=NO_BN_COLOR, base=2,
                label="model.eval() forgotten (shuffled test set)")
    ax.axhline(100 * res["eval_mode_acc"], color=BN_COLOR, label="model.eval() (correct)")
    s = res["sorted"]
    ax.plot([s["batch_size"]], [100 * s["train_mode_acc"]], "s", color="black", ms=8,
            label=f"forgotten, test set sorted by class (batch {s['batch_size']})")
    ax.set_xlabel("evaluation batch size")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"The forgotten model.eval() ({source_label(result)})", fontsize=10)
    fig.tight_layout()
    return fig


def table_eval_bug(result: dict) -> str:
    res = result["results"]
    rows = [[r["eval_batch_size"], _fmt_acc(r["train_mode_acc"]), _fmt_acc(r["eval_mode_acc_afterwards"])]
            for r in res["train_mode"]]
    s = res["sorted"]
    rows.append([f"{s['batch_size']}, sorted by class", _fmt_acc(s["train_mode_acc"]),
                 _fmt_acc(s["eval_mode_acc_afterwards"])])
    header = ["evaluation batch", "accuracy without model.eval()",
              "accuracy with model.eval() afterwards (running statistics overwritten)"]
    return (f"Correct evaluation (model.eval()): **{_fmt_acc(res['eval_mode_acc'])}**\n\n"
            + markdown_table(header, rows))


VARIANT_LABELS = {"no_bn": "no BN", "torch": "nn.BatchNorm2d", "module": "BatchNorm2d (tensor ops)",
                  "function": "BatchNormFunction (hand-written backward)"}


def plot_custom_bn(result: dict):
    """Left: loss curves of the BN implementations; right: time per training step."""
    res = result["results"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    styles = {"torch": "-", "module": "--", "function": ":"}
    colors = {"no_bn": "gray", "torch": BN_COLOR, "module": "tab:orange", "function": "tab:green"}
    _loss_panel(axes[0], res["runs"], lambda h: VARIANT_LABELS.get(h["variant"], h["variant"]),
                lambda h: colors.get(h["variant"], "black"), lambda h: styles.get(h["variant"], "-"))
    axes[0].set_xlabel("training step")
    axes[0].legend(fontsize=8)
    timing = res["step_time"]
    names = [n for n in ("no_bn", "torch", "module", "function") if n in timing]
    ms = [1000 * timing[n]["median_s"] for n in names]
    bars = axes[1].barh([VARIANT_LABELS.get(n, n) for n in names], ms,
                        color=["gray", BN_COLOR, "tab:orange", "tab:green"][:len(names)])
    for bar, n in zip(bars, names):
        axes[1].text(bar.get_width(), bar.get_y() + bar.get_height() / 2,
                     f" {res['step_time_ratio_to_torch'][n]:.2f}x", va="center", fontsize=8)
    axes[1].invert_yaxis()
    axes[1].set_xlabel("milliseconds per training step (median)")
    axes[1].set_xlim(0, max(ms) * 1.25)
    axes[1].grid(alpha=0.3, axis="x")
    fig.suptitle(f"Your BN in the CNN ({source_label(result)})", fontsize=10)
    fig.tight_layout()
    return fig


def table_custom_bn(result: dict) -> str:
    res = result["results"]
    timing = res["step_time"]
    batch = result["config"].get("timing_batch")
    rows = []
    for n in ("no_bn", "torch", "module", "function"):
        if n not in timing:
            continue
        run = next((h for h in res["runs"] if h["variant"] == n), None)
        acc = "-" if run is None else _fmt_acc(run["final_test_acc"], run["diverged"])
        rows.append([VARIANT_LABELS[n], f"{1000 * timing[n]['median_s']:.1f}",
                     f"{res['step_time_ratio_to_torch'][n]:.2f}", f"{timing[n]['images_per_s']:.0f}", acc])
    return markdown_table(["BN layer", f"ms per step (batch {batch})", "time / nn.BatchNorm2d", "images/s",
                      "test accuracy"], rows)


def table_throughput(results: list[dict]) -> str:
    """Images per second of BN and no-BN training from several results (e.g. recorded and live).

    The width of the network, the batch size and the load average of the machine (1-minute
    value at the start and at the end of the experiment) come with each row: CPU timings of
    a shared machine depend on them.
    """
    rows = []
    for result in results:
        thr = result["results"].get("throughput")
        if not thr:
            continue
        prov = result["provenance"]
        start, end = prov.get("load_average_start"), prov.get("load_average")
        load = f"{start[0]:.1f} / {end[0]:.1f}" if start and end else "-"
        rows.append([source_label(result), result["config"].get("width"), result["config"].get("batch_size"),
                     f"{thr['bn_images_per_s']:.0f}" if thr["bn_images_per_s"] else "-",
                     f"{thr['no_bn_images_per_s']:.0f}" if thr["no_bn_images_per_s"] else "-", load])
    return markdown_table(["run", "width", "batch size", "images/s with BN", "images/s without BN",
                           "load average (start / end)"], rows)



def plot_layer_statistics(stats: dict):
    """Inside the network, with and without BN (``stats`` maps "with BN" / "without BN" to
    :func:`bnlab.train.layer_statistics` results): left, the spread of each ReLU layer's output
    at initialization and after training; middle, the spread of the gradient reaching it;
    right, each weight's update-to-weight ratio per step (log10), with the 1e-3 guide."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    colors = {"with BN": BN_COLOR, "without BN": NO_BN_COLOR}
    for label, st in stats.items():
        color = colors.get(label, "black")
        depth = np.arange(1, len(st["layers"]) + 1)
        act = np.asarray(st["activation_std"])
        grad = np.asarray(st["activation_grad_std"])
        axes[0].semilogy(depth, act[0], "o-", color=color, label=f"{label}, step 1")
        axes[0].semilogy(depth, act[-1], "s--", color=color, alpha=0.7, label=f"{label}, step {len(act)}")
        axes[1].semilogy(depth, grad[0], "o-", color=color, label=f"{label}, step 1")
        axes[1].semilogy(depth, grad[-1], "s--", color=color, alpha=0.7, label=f"{label}, step {len(grad)}")
        ratio = np.log10(np.asarray(st["update_ratio"]))
        n = ratio.shape[1]
        for j in range(n):
            axes[2].plot(np.arange(1, len(ratio) + 1), smooth(ratio[:, j]), color=color,
                         alpha=0.35 + 0.65 * (j + 1) / n, lw=1.2, label=label if j == n - 1 else None)
    axes[2].axhline(-3, color="gray", ls=":", lw=1)
    axes[0].set_title("ReLU outputs: standard deviation")
    axes[1].set_title("gradient reaching each ReLU output: std")
    axes[2].set_title("update / weight, per layer (log10)")
    for ax in axes[:2]:
        ax.set_xlabel("ReLU layer (depth)")
        ax.set_xticks(np.arange(1, max(len(st["layers"]) for st in stats.values()) + 1))
    axes[2].set_xlabel("training step")
    axes[2].set_ylabel("log10 std(update) / std(weight)")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def describe_layer_statistics(stats: dict) -> str:
    """Sentences on :func:`plot_layer_statistics`' data: how the activations and the gradients
    change with depth at initialization, and the typical update-to-weight ratio."""
    lines = []
    for label, st in stats.items():
        act = np.asarray(st["activation_std"])[0]
        grad = np.asarray(st["activation_grad_std"])[0]
        ratio = np.log10(np.asarray(st["update_ratio"]))
        per_layer = (act[-1] / act[0]) ** (1 / max(len(act) - 1, 1))
        lines.append(
            f"- **{label}**: at initialization the ReLU outputs' standard deviation goes from {act[0]:.3g} in "
            f"the first layer to {act[-1]:.3g} in the last (×{per_layer:.2f} per layer), and the gradient "
            f"reaching them from {grad[-1]:.2g} at the last layer to {grad[0]:.2g} at the first "
            f"(the first layer gets {grad[0] / grad[-1]:.2g} times the last layer's). The updates move the weights by "
            f"10^{np.median(ratio[0]):.1f} of their size in the first step (median over layers) and "
            f"10^{np.median(ratio[-len(ratio) // 5:]):.1f} over the last fifth of the steps.")
    return "\n".join(lines)


__all__ = [name for name in dir() if name.startswith(("plot_", "table_", "describe_"))] + [
    "smooth", "source_label", "markdown_table", "outcome", "CHANCE"]
