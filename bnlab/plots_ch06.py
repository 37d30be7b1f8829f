"""Figures, tables and result-dependent sentences of chapter 6, drawn from experiment results
(the dicts of :func:`bnlab.experiments.run` or the recorded ``results/ch06_*.json``).

``plot_small_batch`` returns a matplotlib Figure; ``table_*`` return Markdown tables and
``describe_*`` Markdown bullet lists whose every number is read from the result, so that the
chapter's prose stays true when a new run replaces the recorded one. Nothing here trains or
measures.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from bnlab.plots import _fmt_acc, markdown_table, source_label

NORMS = ("bn", "gn", "ln", "none")
NORM_NAMES = {"bn": "BatchNorm", "gn": "GroupNorm", "ln": "LayerNorm", "none": "no normalization"}
NORM_COLORS = {"bn": "tab:blue", "gn": "tab:green", "ln": "tab:purple", "none": "tab:red"}


def _runs(result: dict, norm: str) -> list[dict]:
    return sorted((r for r in result["results"]["runs"] if r["norm"] == norm), key=lambda r: r["batch_size"])


def _pct(value) -> float:
    return np.nan if value is None else 100 * float(value)


def _norms(result: dict) -> list[str]:
    present = {r["norm"] for r in result["results"]["runs"]}
    return [n for n in NORMS if n in present]


# -------------------------------------------------------------------------- small batches


def plot_small_batch(result: dict):
    """Left: test accuracy vs batch size per normalization. Right: BN's eval-mode and
    train-mode test accuracy, and (right axis) the distance of a batch mean from the running
    mean."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    for norm in _norms(result):
        runs = _runs(result, norm)
        left.semilogx([r["batch_size"] for r in runs], [_pct(r["final_test_acc"]) for r in runs], "o-",
                      base=2, color=NORM_COLORS[norm], label=NORM_NAMES[norm])
    left.set_xlabel("batch size")
    left.set_ylabel("test accuracy (%)")
    left.set_title(f"after {result['config']['max_steps']} steps for every batch size")
    bn = _runs(result, "bn")
    sizes = [r["batch_size"] for r in bn]
    right.semilogx(sizes, [_pct(r["final_test_acc"]) for r in bn], "o-", base=2, color=NORM_COLORS["bn"],
                   label="eval mode (running statistics)")
    right.semilogx(sizes, [_pct(r.get("train_mode_test_acc")) for r in bn], "s--", base=2, color="tab:orange",
                   label="train mode (batch statistics)")
    if any(r.get("precise_bn_test_acc") is not None for r in bn):
        right.semilogx(sizes, [_pct(r.get("precise_bn_test_acc")) for r in bn], "^:", base=2, color="tab:cyan",
                       label="eval mode, statistics recomputed")
    right.set_xlabel("batch size")
    right.set_ylabel("test accuracy (%)")
    right.set_title("BatchNorm")
    twin = right.twinx()
    twin.semilogx(sizes, [r.get("mean_distance", np.nan) for r in bn], "k--", base=2, lw=1, alpha=0.7,
                  label="|batch mean - running mean| / running std")
    twin.set_ylabel("batch mean's distance\n(running std)")
    twin.set_ylim(bottom=0)
    for ax in (left, right):
        ax.grid(alpha=0.3, which="both")
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.minorticks_off()
    left.legend(fontsize=8)
    lines = right.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    labels = right.get_legend_handles_labels()[1] + twin.get_legend_handles_labels()[1]
    right.legend(lines, labels, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    fig.suptitle(f"Small batches ({source_label(result)})", fontsize=10)
    fig.tight_layout()
    return fig


def table_small_batch(result: dict) -> str:
    """Test accuracy per batch size and normalization, and BN's statistics columns."""
    norms = _norms(result)
    by = {(r["norm"], r["batch_size"]): r for r in result["results"]["runs"]}
    sizes = sorted({r["batch_size"] for r in result["results"]["runs"]})
    header = ["batch size", *[NORM_NAMES[n] for n in norms]]
    has_bn = "bn" in norms
    if has_bn:
        header += ["BN in train mode", "BN, statistics recomputed", "BN batch-mean distance"]
    rows = []
    for bs in sizes:
        row = [bs, *[_fmt_acc(by[(n, bs)]["final_test_acc"], by[(n, bs)]["diverged"]) if (n, bs) in by else "-"
                     for n in norms]]
        if has_bn and ("bn", bs) in by:
            r = by[("bn", bs)]
            distance = r.get("mean_distance")
            row += [_fmt_acc(r.get("train_mode_test_acc")), _fmt_acc(r.get("precise_bn_test_acc")),
                    "-" if distance is None else f"{distance:.3f}"]
        rows.append(row)
    return markdown_table(header, rows)


def _acc(result, norm, bs):
    r = next((r for r in result["results"]["runs"] if r["norm"] == norm and r["batch_size"] == bs), None)
    return None if r is None or r["diverged"] else r["final_test_acc"]


def describe_small_batch(result: dict, literature: dict | None = None) -> str:
    """What the recorded run shows, in sentences whose numbers come from ``result``.

    ``literature``: Wu & He's table (``"images per GPU"``, ``"BN"``, ``"GN"`` error rates in
    percent) to set beside the measured change from the largest to the smallest batch.
    """
    sizes = sorted({r["batch_size"] for r in result["results"]["runs"]})
    small, large = sizes[0], sizes[-1]
    lines = []
    for norm in _norms(result):
        a_small, a_large = _acc(result, norm, small), _acc(result, norm, large)
        if a_small is None or a_large is None:
            lines.append(f"- {NORM_NAMES[norm]}: a run diverged (see the table).")
            continue
        best = max((r for r in _runs(result, norm) if not r["diverged"]), key=lambda r: r["final_test_acc"])
        lines.append(f"- {NORM_NAMES[norm]}: {100 * a_large:.1f}% at batch {large}, {100 * a_small:.1f}% at batch "
                     f"{small} ({100 * (a_small - a_large):+.1f} points); best {100 * best['final_test_acc']:.1f}% "
                     f"at batch {best['batch_size']}.")
    bn = {r["batch_size"]: r for r in _runs(result, "bn")}
    if small in bn and large in bn:
        s, l = bn[small], bn[large]
        if s.get("mean_distance") is not None and l.get("mean_distance") is not None:
            ratio = s["mean_distance"] / l["mean_distance"] if l["mean_distance"] > 0 else float("inf")
            lines.append(f"- BN's batch means lie {l['mean_distance']:.3f} running standard deviations from the running "
                         f"means at batch {large} and {s['mean_distance']:.3f} at batch {small}, {ratio:.1f} times "
                         f"farther.")
        gaps = [(bs, r["train_mode_test_acc"] - r["final_test_acc"]) for bs, r in sorted(bn.items())
                if r.get("train_mode_test_acc") is not None and r["final_test_acc"] is not None]
        if gaps:
            bs_max, gap_max = max(gaps, key=lambda g: abs(g[1]))
            lines.append(f"- BN's train-mode minus eval-mode test accuracy is {100 * gaps[0][1]:+.1f} points at batch "
                         f"{gaps[0][0]} and {100 * gaps[-1][1]:+.1f} at batch {gaps[-1][0]}; the largest difference, "
                         f"{100 * gap_max:+.1f} points, is at batch {bs_max}.")
        precise = [(bs, r["precise_bn_test_acc"] - r["final_test_acc"]) for bs, r in sorted(bn.items())
                   if r.get("precise_bn_test_acc") is not None and r["final_test_acc"] is not None]
        if precise:
            lines.append(f"- Recomputing BN's statistics after training changes its test accuracy by "
                         f"{100 * precise[0][1]:+.1f} points at batch {precise[0][0]} and {100 * precise[-1][1]:+.1f} "
                         f"at batch {precise[-1][0]}.")
        gn_minus_bn = [f"{100 * (gn - bn_):+.1f} points at batch {bs}" for bs in (small, large)
                       for bn_, gn in [(_acc(result, "bn", bs), _acc(result, "gn", bs))]
                       if bn_ is not None and gn is not None]
        if gn_minus_bn:
            lines.append("- GroupNorm minus BatchNorm: " + "; ".join(gn_minus_bn) + ".")
    if literature:
        bn_err, gn_err = literature["BN"], literature["GN"]
        lines.append(f"- For comparison, {literature['images per GPU'][0]} → {literature['images per GPU'][-1]} images "
                     f"per GPU in Wu and He's ResNet-50 on ImageNet: BN's error {bn_err[0]}% → {bn_err[-1]}% "
                     f"({bn_err[-1] - bn_err[0]:+.1f} points), GN's {gn_err[0]}% → {gn_err[-1]}% "
                     f"({gn_err[-1] - gn_err[0]:+.1f}).")
    return "\n".join(lines)


# -------------------------------------------------------------------------- folding

VARIANT_NAMES = {"unfolded": "conv + BN (unfolded)", "fx": "folded by torch.fx", "fold": "folded by fold_batchnorm"}


def table_folding(result: dict) -> str:
    """Inference time per batch for each variant and batch size, with the speed-up."""
    res = result["results"]
    rows = []
    for row in sorted(res["timing"], key=lambda r: (r["batch_size"], list(VARIANT_NAMES).index(r["variant"])
                                                     if r["variant"] in VARIANT_NAMES else 9)):
        speedup = res["speedup"].get(row["variant"], {}).get(str(row["batch_size"]))
        rows.append([row["batch_size"], VARIANT_NAMES.get(row["variant"], row["variant"]),
                     f"{row['median_ms']:.3g}", f"{row['iqr_ms']:.2g}",
                     "1 (baseline)" if row["variant"] == "unfolded" else (f"{speedup:.2f}×" if speedup else "-")])
    diffs = ", ".join(f"{VARIANT_NAMES.get(k, k)}: {v:.1e}" for k, v in res["max_abs_logit_diff"].items())
    threads = res.get("threads")
    timed = ("one thread" if threads == 1 else f"{threads} threads") if threads else "an unrecorded number of threads"
    return (markdown_table(["batch size", "network", "median time per batch (ms)", "IQR (ms)", "speed-up"], rows)
            + f"\n\nLargest difference of the logits from the unfolded network (float32): {diffs}. "
              f"Timed with {timed}.")


def describe_folding(result: dict) -> str:
    """The speed-ups of the recorded run, per batch size, in one sentence each."""
    res = result["results"]
    lines = []
    for bs in sorted({r["batch_size"] for r in res["timing"]}):
        parts = [f"{VARIANT_NAMES.get(v, v)} {res['speedup'][v][str(bs)]:.2f}×" for v in res["speedup"]
                 if str(bs) in res["speedup"][v] and v != "unfolded"]
        lines.append(f"- Batch {bs}: " + ", ".join(parts) + " the speed of the unfolded network.")
    return "\n".join(lines)
