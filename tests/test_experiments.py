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
    for name in bexp.NAMES:
        for profile in bexp.PROFILES:
            cfg = bexp.default_config(name, profile)
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


RECORDED = sorted((ROOT / "results").glob("ch04_*.json"))


@pytest.mark.parametrize("path", RECORDED, ids=[p.stem for p in RECORDED])
def test_recorded_results_are_complete(path):
    r = json.loads(path.read_text())
    assert path.stem == f"ch04_{r['experiment']}" and r["experiment"] in bexp.NAMES
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


del np
