"""Tests of bnlab.experiments and bnlab.plots: quick runs on synthetic data, the JSON schema and
its provenance, the command line, and the recorded results in results/."""

import json
import math
import socket
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from bnlab import device as bdevice  # noqa: E402
from bnlab import experiments as bexp  # noqa: E402
from bnlab import plots  # noqa: E402
from bnlab import train as btrain  # noqa: E402
from bnlab.train import make_data  # noqa: E402

from tests.test_train import synthetic_arrays  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)

# Small enough to take about a second per experiment on one CPU thread.
TINY = dict(width=4, train_size=160, test_size=80, train_eval_size=80, batch_size=16, epochs=1)
TINY_EXTRA = {
    "lr_sweep": dict(lrs=[0.05, 1e6]),
    "init_scale": dict(scales=[0.5, 2.0]),
    "batch_size": dict(batch_sizes=[4, 32], base_batch=16),
    "eval_bug": dict(eval_batch_sizes=[1, 16, 80], sorted_batch_size=10),
    "custom_bn": dict(timing_batch=8, timing_steps=1, timing_repeats=2),
}


@pytest.fixture(scope="module")
def tiny_data():
    return make_data(*synthetic_arrays(n_train=160, n_test=80), device="cpu", info={"dataset": "synthetic"})


@pytest.fixture(scope="module")
def results(tiny_data):
    out = {}
    for name in bexp.NAMES:
        out[name] = bexp.run(name, quick=True, device="cpu", data=tiny_data, **TINY, **TINY_EXTRA[name])
    return out


def test_every_experiment_has_three_profiles():
    for name in bexp.ALL_NAMES:
        for profile in bexp.PROFILES:
            cfg = bexp.default_config(name, profile)
            if bexp.EXPERIMENTS[name]["chapter"] != "ch05":    # chapter 5 trains with its own SGD loop
                btrain.TrainConfig.from_dict(cfg)          # valid training settings
    full = bexp.default_config("lr_sweep", "full")
    assert full["train_size"] is None and full["epochs"] >= 10 and full["schedule"] in btrain.SCHEDULES
    with pytest.raises(ValueError):
        bexp.default_config("nope")
    with pytest.raises(ValueError):
        bexp.default_config("lr_sweep", "huge")


@pytest.mark.parametrize("name", bexp.NAMES)
def test_result_schema_and_provenance(results, name):
    r = results[name]
    assert r["experiment"] == name and r["profile"] == "quick" and r["schema_version"] == bexp.SCHEMA_VERSION
    prov = r["provenance"]
    for key in ("device", "device_name", "torch", "cuda", "date", "wall_time_s"):
        assert key in prov, key
    assert prov["device"] == "cpu" and prov["cuda"] is None and prov["cudnn"] is None   # no GPU claimed
    assert prov["torch"] == torch.__version__ and prov["wall_time_s"] > 0
    assert "hostname" not in json.dumps(r)
    host = socket.gethostname()
    if len(host) >= 8:
        assert host not in json.dumps(r)
    assert r["config"]["seed"] == 0 and r["config"]["width"] == 4
    assert r["config"]["data"]["dataset"] == "synthetic"
    assert "reference" in r["config"]["implementations"]["make_cnn"]
    text = bexp._dumps(r)
    assert json.loads(text) == json.loads(json.dumps(r))        # valid JSON, no NaN


def test_lr_sweep_marks_divergence(results):
    res = results["lr_sweep"]["results"]
    assert len(res["runs"]) == 4 and len(res["table"]) == 4
    huge = [row for row in res["table"] if row["lr"] == 1e6]
    assert all(row["diverged"] for row in huge)
    assert all(row["final_test_acc"] is None for row in huge)
    assert res["throughput"]["bn_images_per_s"] > 0 and res["throughput"]["no_bn_images_per_s"] > 0


def test_init_scale_logits(results):
    res = results["init_scale"]["results"]
    std = {(r["use_bn"], r["init_scale"]): r["logit_std"] for r in res["initial_logit_std"]}
    # without BN the logits grow like s**4 (4 convolutions); with BN they do not depend on s
    assert std[(False, 2.0)] / std[(False, 0.5)] > 30
    assert std[(True, 2.0)] == pytest.approx(std[(True, 0.5)], rel=1e-3)


def test_batch_size_scales_the_learning_rate(results):
    runs = results["batch_size"]["results"]["runs"]
    lrs = {(h["use_bn"], h["batch_size"]): h["lr"] for h in runs}
    assert lrs[(True, 32)] == pytest.approx(8 * lrs[(True, 4)])
    assert {h["steps"] for h in runs if h["batch_size"] == 4} == {40}


def test_eval_bug_result(results):
    res = results["eval_bug"]["results"]
    assert 0 <= res["eval_mode_acc"] <= 1
    assert [row["eval_batch_size"] for row in res["train_mode"]] == [1, 16, 80]
    assert 0 <= res["sorted"]["train_mode_acc"] <= 1


def test_custom_bn_result(results):
    res = results["custom_bn"]["results"]
    assert [h["variant"] for h in res["runs"]] == ["torch", "module", "function"]
    assert max(res["initial_max_abs_logit_diff"].values()) < 1e-4
    assert set(res["step_time"]) == {"no_bn", "torch", "module", "function"}
    assert res["step_time_ratio_to_torch"]["torch"] == 1.0


def test_run_passes_the_students_implementations(tiny_data):
    from solutions.ch04_cnn import BatchNorm2d, BatchNormFunction, make_cnn

    used = []

    def my_make_cnn(use_bn, width=32):
        used.append(use_bn)
        return make_cnn(use_bn, width=width)

    r = bexp.run("custom_bn", device="cpu", data=tiny_data, make_cnn=my_make_cnn, bn_module=BatchNorm2d,
                 bn_function=BatchNormFunction, **TINY, **TINY_EXTRA["custom_bn"], variants=["torch", "module"])
    assert used and "my_make_cnn" in r["config"]["implementations"]["make_cnn"]
    assert "BatchNorm2d" in r["config"]["implementations"]["bn_module"]


def test_run_rejects_unknown_settings_and_devices(tiny_data, monkeypatch):
    with pytest.raises(ValueError, match="unknown configuration"):
        bexp.run("lr_sweep", data=tiny_data, device="cpu", learning_rates=[0.1])
    with pytest.raises(ValueError, match="unknown experiment"):
        bexp.run("resnet", data=tiny_data)
    monkeypatch.setattr(bdevice, "cuda_available", lambda: False)
    with pytest.raises(ValueError, match="cuda"):
        bexp.run("lr_sweep", data=tiny_data, device="cuda")


def test_save_and_load(results, tmp_path):
    path = bexp.save_result(results["lr_sweep"], tmp_path)
    assert path.name == "ch04_lr_sweep.json"
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    runs = len(results["lr_sweep"]["results"]["runs"])
    assert len(text.splitlines()) < 100 * runs                # lists of numbers stay on one line
    assert '"step_loss": [' in text
    assert bexp.load_result("lr_sweep", tmp_path) == json.loads(json.dumps(results["lr_sweep"]))
    assert bexp.load_result("init_scale", tmp_path) is None


@pytest.mark.parametrize("name", bexp.NAMES)
def test_plots_and_tables(results, name):
    import matplotlib.pyplot as plt

    fig = getattr(plots, f"plot_{name}")(results[name])
    assert fig.axes
    plt.close(fig)
    table = getattr(plots, f"table_{name}")(results[name])
    assert table.count("|") > 6
    assert "quick run, CPU" in plots.source_label(results[name])


def _recorded(name):
    path = ROOT / "results" / f"ch04_{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


@pytest.mark.parametrize("name", ["lr_sweep", "batch_size", "custom_bn"])
def test_loss_panels_show_every_finite_loss(name):
    """No loss up to plots.LOSS_CAP is clipped away (the BN spikes the chapter describes), and
    every loss above the cap is marked on the top edge."""
    import matplotlib.pyplot as plt

    result = _recorded(name) or pytest.skip("not recorded")
    fig = getattr(plots, f"plot_{name}")(result)
    runs = result["results"]["runs"]
    if name == "batch_size":  # the BN runs' moving averages (2,000 single steps of batch 2 would hide them)
        losses = [v for h in runs if h["use_bn"] for v in plots.smooth(h["step_loss"]) if np.isfinite(v)]
    else:
        losses = [float(v) for h in runs for v in h["step_loss"] if v is not None]
    shown = [v for v in losses if 0 < v <= plots.LOSS_CAP]
    axes = [ax for ax in fig.axes if ax.get_yscale() == "log"]
    assert axes, "the loss panel should have a log y axis"
    low = min(ax.get_ylim()[0] for ax in axes)
    high = max(ax.get_ylim()[1] for ax in axes)
    assert low <= min(shown) and max(shown) <= high
    over = sum(v > plots.LOSS_CAP for v in losses)
    markers = sum(len(line.get_xdata()) for ax in axes for line in ax.get_lines() if line.get_marker() == "^")
    assert markers == over
    plt.close(fig)


def test_loss_panel_marks_losses_above_the_cap():
    import matplotlib.pyplot as plt

    result = {"profile": "quick", "provenance": {"device": "cpu"}, "results": {"runs": [
        {"lr": 0.1, "use_bn": True, "diverged": False, "step_loss": [2.3, 25.0, 1.0, 0.5]},
        {"lr": 1.0, "use_bn": False, "diverged": True, "diverged_at_step": 3,
         "step_loss": [2.3, 40.0, 1e31, None]}]}}
    fig = plots.plot_lr_sweep(result)
    for ax in fig.axes:
        assert ax.get_yscale() == "log" and ax.get_ylim()[1] >= 40.0
    tops = [(list(line.get_xdata()), line.get_marker()) for line in fig.axes[1].get_lines()
            if line.get_marker() in ("^", "x") and len(line.get_xdata())]
    assert ([3], "^") in tops and ([4], "x") in tops
    plt.close(fig)


def test_throughput_table(results):
    table = plots.table_throughput([results["lr_sweep"]])
    assert "images/s with BN" in table and "quick run" in table


# ------------------------------------------------------------------ command line


def test_cli_help():
    proc = subprocess.run([sys.executable, "-m", "bnlab.experiments", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for word in ("lr_sweep", "init_scale", "batch_size", "eval_bug", "custom_bn", "--device", "--seed",
                 "--quick", "--full", "--record-cpu", "--out"):
        assert word in proc.stdout


def test_cli_list_and_errors(capsys):
    assert bexp.main(["list", "--full"]) == 0
    out = capsys.readouterr().out
    assert "lr_sweep" in out and '"epochs": 15' in out
    assert bexp.main(["lr_sweep", "--record-cpu", "--device", "cuda"]) == 2
    assert bexp.main(["lr_sweep", "--set", "oops"]) == 2


def test_cli_runs_an_experiment(monkeypatch, tmp_path, capsys):
    arrays = synthetic_arrays(n_train=160, n_test=80)
    monkeypatch.setattr(btrain, "_fashion_mnist_arrays", lambda root=None, verify=True: arrays)
    monkeypatch.setattr(bdevice, "cuda_available", lambda: False)
    monkeypatch.setattr(bdevice, "mps_available", lambda: False)
    args = ["lr_sweep", "--quick", "--no-progress", "--out", str(tmp_path), "--seed", "3"]
    for key, value in {**TINY, "lrs": "0.05,1e6"}.items():
        args += ["--set", f"{key}={value}"]
    assert bexp.main(args) == 0
    out = capsys.readouterr().out
    assert "DIVERGED" in out and "on cpu" in out
    result = json.loads((tmp_path / "ch04_lr_sweep.json").read_text())
    assert result["config"]["seed"] == 3 and result["config"]["lrs"] == [0.05, 1e6]
    assert result["provenance"]["device"] == "cpu"


def test_load_data_from_idx_files(tmp_path):
    from tests.test_data import make_dataset

    make_dataset(tmp_path, n_train=30, n_test=10)
    d = btrain.load_data("cpu", train_size=20, root=tmp_path, verify=False)
    assert d.x_train.shape == (20, 1, 28, 28) and d.x_test.shape == (10, 1, 28, 28)
    assert d.info["dataset"] == "fashion-mnist"


# ------------------------------------------------------------------ the recorded results


RECORDED = sorted((ROOT / "results").glob("ch0[456]_*.json"))


@pytest.mark.parametrize("path", RECORDED, ids=[p.stem for p in RECORDED])
def test_recorded_results_are_complete(path):
    r = json.loads(path.read_text())
    assert r["experiment"] in bexp.ALL_NAMES
    assert path.stem == f"{bexp.EXPERIMENTS[r['experiment']]['chapter']}_{r['experiment']}"
    assert r["profile"] in bexp.PROFILES
    prov = r["provenance"]
    assert prov["wall_time_s"] > 0 and prov["date"] and prov["torch"]
    if prov["device"] == "cpu":
        assert prov["cuda"] is None, "a CPU run must not claim a CUDA version"
    else:
        assert prov["device_name"] and prov["device"] in ("cuda", "mps")
    for row in r["results"].get("table", []):
        assert row["diverged"] or row["final_test_acc"] is not None
    assert not any(isinstance(v, float) and not math.isfinite(v) for v in _numbers(r))


def _numbers(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)
    elif isinstance(obj, (int, float)):
        yield obj


def test_full_profile_is_not_claimed_without_a_gpu():
    for path in RECORDED:
        r = json.loads(path.read_text())
        if r["profile"] == "full":
            assert r["provenance"]["device"] != "cpu" or r["config"]["train_size"] is None





# ------------------------------------------------------------------ chapter 6

TINY_CH06 = {
    "small_batch": dict(width=4, train_eval_size=80, batch_sizes=[2, 64], max_steps=6, stat_batches=3,
                        precise_bn_images=64, precise_bn_batch=32, loss_points=4),
    "folding": dict(width=4, train_steps=3, train_batch=16, timing_batch_sizes=[1, 8], min_run_time=0.001,
                    timing_rounds=1, diff_batch=32),
}


@pytest.fixture(scope="module")
def results_ch06(tiny_data):
    return {name: bexp.run(name, quick=True, device="cpu", data=tiny_data, **TINY_CH06[name])
            for name in bexp.CHAPTER_NAMES["ch06"]}


def test_chapters_and_result_paths(tmp_path):
    assert bexp.CHAPTER_NAMES["ch06"] == ("small_batch", "folding")
    assert set(bexp.NAMES) == set(bexp.CHAPTER_NAMES["ch04"])
    assert set(bexp.ALL_NAMES) == set(bexp.NAMES) | set(bexp.CHAPTER_NAMES["ch05"]) | {"small_batch", "folding"}
    assert bexp.result_path("lr_sweep", tmp_path).name == "ch04_lr_sweep.json"
    assert bexp.result_path("small_batch", tmp_path).name == "ch06_small_batch.json"
    assert bexp.result_path("folding", tmp_path).name == "ch06_folding.json"
    assert bexp.select(["ch06"]) == ["small_batch", "folding"]
    assert bexp.select(["ch04"]) == list(bexp.NAMES)
    assert bexp.select(["all"]) == bexp.select(["list"]) == list(bexp.ALL_NAMES)
    assert bexp.select(["folding", "ch06", "lr_sweep"]) == ["folding", "small_batch", "lr_sweep"]


@pytest.mark.parametrize("name", ["small_batch", "folding"])
def test_ch06_schema_save_and_load(results_ch06, name, tmp_path):
    r = results_ch06[name]
    assert r["experiment"] == name and r["profile"] == "quick"
    assert r["provenance"]["device"] == "cpu" and r["provenance"]["cuda"] is None
    assert "reference" in r["config"]["implementations"]["make_cnn"]
    path = bexp.save_result(r, tmp_path)
    assert path.name == f"ch06_{name}.json"
    assert bexp.load_result(name, tmp_path) == json.loads(json.dumps(r))
    assert json.loads(bexp._dumps(r)) == json.loads(json.dumps(r))      # valid JSON, no NaN


def test_small_batch_takes_the_same_number_of_steps(results_ch06):
    r = results_ch06["small_batch"]
    runs = r["results"]["runs"]
    max_steps = r["config"]["max_steps"]
    assert {(h["norm"], h["batch_size"]) for h in runs} == {(n, b) for n in bexp.NORMS for b in (2, 64)}
    # 64 x 6 steps > 160 training images (3 steps an epoch): training goes on over several epochs
    assert {h["steps"] for h in runs} == {max_steps}
    assert all(h["epochs"] == 2 and len(h["epoch_end_step"]) == 2 for h in runs if h["batch_size"] == 64)
    assert len({h["lr"] for h in runs}) == 1 and runs[0]["lr"] == r["config"]["lr"]
    for h in runs:
        assert len(h["step_loss"]) <= r["config"]["loss_points"] and h["step_loss_end_step"][-1] == max_steps
        for key in ("final_test_acc", "final_train_acc", "diverged", "images_per_s"):
            assert key in h
    for h in runs:
        if h["norm"] == "bn":
            assert 0 <= h["train_mode_test_acc"] <= 1 and 0 <= h["precise_bn_test_acc"] <= 1
            assert h["mean_distance"] >= 0 and h["var_ratio"] > 0
        else:
            assert "mean_distance" not in h
    assert len(r["results"]["table"]) == len(runs)
    assert r["results"]["gn_groups"] == 4                      # gcd(8, width 4)


def test_small_batch_norm_swap():
    for width, groups in ((16, 8), (4, 4), (12, 4)):
        gn = bexp.build_norm_model("gn", width=width)
        layers = [m for m in gn.modules() if isinstance(m, torch.nn.GroupNorm)]
        assert len(layers) == 4 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in gn.modules())
        assert [m.num_groups for m in layers] == [groups] * 4
        assert [m.num_channels for m in layers] == [width, width, 2 * width, 2 * width]
        assert all(width % g == 0 for g in (m.num_groups for m in layers))
    ln = bexp.build_norm_model("ln", width=8)
    assert [m.num_groups for m in ln.modules() if isinstance(m, torch.nn.GroupNorm)] == [1] * 4
    none = bexp.build_norm_model("none", width=8)
    assert not any(isinstance(m, (torch.nn.GroupNorm, torch.nn.BatchNorm2d)) for m in none.modules())
    # the same seed: BN, GN and LN start from the same convolution weights
    bn = bexp.build_norm_model("bn", width=8, seed=3)
    gn = bexp.build_norm_model("gn", width=8, seed=3)
    assert torch.equal(bn[0].weight, gn[0].weight)
    with pytest.raises(ValueError):
        bexp.build_norm_model("instance", width=8)


def test_batch_statistics_distance_changes_nothing(tiny_data):
    model = bexp.build_norm_model("bn", width=4)
    model.train()
    with torch.no_grad():
        model(tiny_data.x_train[:64])                # some running statistics
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats = bexp.batch_statistics_distance(model, tiny_data.x_train, 2, batches=5)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and model.training
    big = bexp.batch_statistics_distance(model, tiny_data.x_train, 128, batches=5)
    assert stats["mean_distance"] > big["mean_distance"] > 0    # a batch of 2 lies farther away


def _fold_tolerance(result):
    # float32 logits of unfolded and folded networks differ by rounding only: the longest
    # reduction is a 3x3 convolution over 2w channels (18 w terms) per layer, four layers and the
    # classifier; 1000 covers the chain and its conditioning, relative to the largest logit.
    from bnlab.numerics import sum_error

    width = result["config"]["width"]
    return 1000 * sum_error(torch.float32, 18 * width) * max(1.0, result["results"]["max_abs_logit"])


def test_folding_result(results_ch06):
    r = results_ch06["folding"]
    res = r["results"]
    assert set(res["max_abs_logit_diff"]) == {"fx", "fold"}
    assert max(res["max_abs_logit_diff"].values()) < _fold_tolerance(r)
    assert res["bn_layers_left"] == {"unfolded": 4, "fx": 0, "fold": 0}
    assert {(row["variant"], row["batch_size"]) for row in res["timing"]} == \
        {(v, b) for v in ("unfolded", "fx", "fold") for b in (1, 8)}
    assert all(row["median_ms"] > 0 and row["iqr_ms"] >= 0 for row in res["timing"])
    assert set(res["speedup"]) == {"unfolded", "fx", "fold"} and res["speedup"]["unfolded"] == {"1": 1.0, "8": 1.0}
    assert res["threads"] == r["config"]["timing_threads"] == 1
    assert "ch06_beyond" in r["config"]["implementations"]["fold"]
    assert torch.get_num_threads() == 1                   # the test's setting is restored


def test_folding_uses_the_fold_it_is_given(tiny_data):
    from solutions.ch06_beyond import fold_batchnorm

    calls = []

    def my_fold(weight, bias, gamma, beta, running_mean, running_var, eps=1e-5):
        calls.append(weight.shape)
        return fold_batchnorm(weight, bias, gamma, beta, running_mean, running_var, eps)

    def wrong_fold(weight, bias, gamma, beta, running_mean, running_var, eps=1e-5):
        w, b = fold_batchnorm(weight, bias, gamma, beta, running_mean, running_var, eps)
        return w, b + 1.0                                   # a wrong bias

    ok = bexp.run("folding", device="cpu", data=tiny_data, fold=my_fold, **TINY_CH06["folding"])
    assert len(calls) == 4 and "my_fold" in ok["config"]["implementations"]["fold"]
    assert ok["results"]["max_abs_logit_diff"]["fold"] < _fold_tolerance(ok)
    bad = bexp.run("folding", device="cpu", data=tiny_data, fold=wrong_fold, **TINY_CH06["folding"])
    assert bad["results"]["max_abs_logit_diff"]["fold"] > 100 * _fold_tolerance(bad)
    assert bad["results"]["max_abs_logit_diff"]["fx"] < _fold_tolerance(bad)     # fx is not affected
    with pytest.raises(ValueError, match="does not use"):
        bexp.run("small_batch", device="cpu", data=tiny_data, fold=my_fold, **TINY_CH06["small_batch"])


def test_cli_selects_a_chapter(capsys):
    assert bexp.main(["list", "ch06", "--record-cpu"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("small_batch:") and "folding:" in out and "lr_sweep" not in out
    proc = subprocess.run([sys.executable, "-m", "bnlab.experiments", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    for word in ("small_batch", "folding", "ch04", "ch06", "all"):
        assert word in proc.stdout


def _recorded_or_tiny(name, results_ch06):
    path = ROOT / "results" / f"ch06_{name}.json"
    return json.loads(path.read_text()) if path.is_file() else results_ch06[name]


def test_ch06_figure_tables_and_sentences(results_ch06):
    import copy

    import matplotlib.pyplot as plt

    from bnlab import plots_ch06

    for result in (results_ch06["small_batch"], _recorded_or_tiny("small_batch", results_ch06)):
        fig = plots_ch06.plot_small_batch(result)
        assert len(fig.axes) >= 2
        plt.close(fig)
        sizes = sorted({r["batch_size"] for r in result["results"]["runs"]})
        table = plots_ch06.table_small_batch(result)
        assert table.count("\n") >= len(sizes) + 1         # a header, a rule, a row per batch size
        text = plots_ch06.describe_small_batch(result)
        bn_large = next(r for r in result["results"]["runs"] if r["norm"] == "bn" and r["batch_size"] == sizes[-1])
        assert f"{100 * bn_large['final_test_acc']:.1f}% at batch {sizes[-1]}" in text

    # A diverged run is named as such, and no difference is computed with it.
    broken = copy.deepcopy(results_ch06["small_batch"])
    for run in broken["results"]["runs"]:
        if run["norm"] == "gn" and run["batch_size"] == max(r["batch_size"] for r in broken["results"]["runs"]):
            run.update(diverged=True, final_test_acc=None)
    text = plots_ch06.describe_small_batch(broken, {"images per GPU": [32, 2], "BN": [23.6, 34.7],
                                                    "GN": [24.1, 24.1]})
    assert "GroupNorm: a run diverged" in text
    assert "GroupNorm minus BatchNorm" in text and f"at batch {max(r['batch_size'] for r in broken['results']['runs'])}." \
        not in text.split("GroupNorm minus BatchNorm")[1].splitlines()[0]
    assert "34.7%" in text and "+11.1 points" in text

    folding = _recorded_or_tiny("folding", results_ch06)
    table = plots_ch06.table_folding(folding)
    threads = folding["results"]["threads"]
    assert ("one thread" if threads == 1 else f"{threads} threads") in table and "(s)" not in table
    lines = plots_ch06.describe_folding(folding).splitlines()
    assert len(lines) == len({r["batch_size"] for r in folding["results"]["timing"]})


RECORDED_CH06 = {"small_batch": ROOT / "results" / "ch06_small_batch.json",
                 "folding": ROOT / "results" / "ch06_folding.json"}


@pytest.mark.parametrize("name", list(RECORDED_CH06))
def test_recorded_ch06_fields(name):
    path = RECORDED_CH06[name]
    if not path.is_file():
        pytest.skip(f"{path.name} not recorded")
    r = json.loads(path.read_text())
    res = r["results"]
    if name == "small_batch":
        max_steps = r["config"]["max_steps"]
        for h in res["runs"]:
            for key in ("norm", "batch_size", "steps", "final_test_acc", "final_train_acc", "diverged",
                        "images_per_s", "step_loss"):
                assert key in h, key
            assert h["diverged"] or h["steps"] == max_steps
            assert len(h["step_loss"]) <= 100
            if h["norm"] == "bn" and not h["diverged"]:
                for key in ("train_mode_test_acc", "mean_distance", "var_ratio", "precise_bn_test_acc"):
                    assert h[key] is not None, key
        assert {h["norm"] for h in res["runs"]} == set(bexp.NORMS)
        assert len(res["table"]) == len(res["runs"])
    else:
        assert set(res["max_abs_logit_diff"]) == {"fx", "fold"}
        assert max(res["max_abs_logit_diff"].values()) < _fold_tolerance(r)
        sizes = {row["batch_size"] for row in res["timing"]}
        assert {1, 256} <= sizes
        for variant, per_size in res["speedup"].items():
            assert set(per_size) == {str(b) for b in sizes}
        assert res["threads"] >= 1


def test_describe_recordings_follows_the_provenance():
    cpu = {"profile": "record-cpu", "provenance": {"device": "cpu", "device_name": "AMD EPYC"}}
    gpu = {"profile": "full", "provenance": {"device": "cuda", "device_name": "NVIDIA H200"}}
    text = plots.describe_recordings({"lr_sweep": cpu, "folding": cpu, "eval_bug": None})
    assert "All 2 recorded experiments ran on a CPU" in text and "No GPU result" in text
    assert "Not recorded: eval_bug." in text
    text = plots.describe_recordings({"lr_sweep": gpu, "folding": cpu})
    assert "1 of the 2 recorded experiments ran on a GPU (NVIDIA H200; profile full: lr_sweep)" in text
    assert "No GPU result" not in text and "1 of the 2 recorded experiments ran on a CPU" in text
    assert "not been recorded" not in plots.describe_recordings({"lr_sweep": gpu})
    assert "No experiment has been recorded" in plots.describe_recordings({"lr_sweep": None})


def test_provenance_caveats_name_loaded_and_dirty_runs():
    quiet = {"provenance": {"cpu_count": 2, "load_average_start": [0.5, 1, 1], "load_average": [1.9, 1, 1],
                            "git": "0123456789ab"}}
    loaded = {"provenance": {"cpu_count": 2, "load_average_start": [7.5, 1, 1], "load_average": [1.0, 1, 1],
                             "git": "0123456789ab-dirty"}}
    busy_by_itself = {"provenance": {"cpu_count": 2, "torch_threads": 2, "load_average_start": [2.0, 1, 1],
                                     "load_average": [2.25, 1, 1], "git": "0123456789ab"}}
    busy_with_others = {"provenance": {"cpu_count": 2, "torch_threads": 1, "load_average_start": [0.2, 1, 1],
                                       "load_average": [2.3, 1, 1], "git": "0123456789ab"}}
    assert plots.describe_provenance_caveats({"a": quiet, "b": None, "c": busy_by_itself}) == ""
    text = plots.describe_provenance_caveats({"a": quiet, "b": loaded, "c": busy_with_others})
    assert "loaded machine**: b (7.5 on 2 cores), c (2.3 on 2 cores, 1 of it its own threads)" in text
    assert "uncommitted changes** (`-dirty`): b." in text
    assert plots.load_label(quiet["provenance"]) == "0.5 → 1.9"
    assert plots.load_label({}) == "not recorded"
