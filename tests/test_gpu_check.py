"""bench/gpu_check.py --smoke: the GPU check's code paths at tiny sizes on the CPU, so the script cannot rot before
a GPU is lent (`make gpu-check` runs the real sizes there).

    .venv/bin/python -m pytest tests/test_gpu_check.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu_check")
    md = root / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\n## Another section\n\nkept\n")
    proc = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--smoke", "--json", str(root / "check.json"), "--write"]
        + ["--output", str(md)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return json.loads((root / "check.json").read_text()), md.read_text()


def test_every_part_runs_and_is_reported(smoke):
    report, md = smoke
    assert report["smoke"] and not report["errors"]
    assert set(report["parts"]) == {"lm", "ssl", "clip", "info", "generation"}
    assert "## Another section\n\nkept" in md and "## GPU check" in md
    assert report["device_name"] in md
    for heading in ("**LM step**", "**SSL step**", "**CLIP step**", "**info**", "**eval gsm8k**"):
        assert heading in md, heading


def test_the_ratios_are_between_figures_of_the_same_run(smoke):
    parts = smoke[0]["parts"]
    lm = {r["variant"]: r for r in parts["lm"]["rows"]}
    assert set(lm) == {"ce", "ce+head", "ce+relation", "ce+alignment"}
    for r in lm.values():
        assert r["ratio"] == pytest.approx(r["ms"] / lm["ce"]["ms"]) and r["ms"] > 0
    assert all(lm[v]["loss_ms"] > 0 for v in lm if v != "ce")
    ssl = {r["variant"]: r for r in parts["ssl"]["rows"]}
    assert set(ssl) == {
        "matrix_ssl exact",
        "matrix_ssl official",
        "mec",
        "simclr",
        "barlow_twins",
        "byol-style",
    }
    for r in ssl.values():
        assert r["vs byol-style"] == pytest.approx(r["ms"] / ssl["byol-style"]["ms"])
        assert r["vs simclr"] == pytest.approx(r["ms"] / ssl["simclr"]["ms"])
    clip = {r["variant"]: r for r in parts["clip"]["rows"]}
    assert set(clip) == {"infonce", "+ alignment", "+ covariance MCE", "+ both"}
    assert all(r["vs infonce"] == pytest.approx(r["ms"] / clip["infonce"]["ms"]) for r in clip.values())
    info = parts["info"]["rows"]
    assert {(r["op"], r["dtype"]) for r in info} == {
        (op, dt) for op in ("eigh", "mce", "feature_mce") for dt in ("float32", "float64")
    }
    for r in info:
        assert r["speedup"] == pytest.approx(r["cpu_ms"] / r["device_ms"])
        assert r["rel_diff"] < 1e-5  # the same inputs on both devices (here both are the CPU)


def test_generation_times_the_hf_path_and_says_why_vllm_did_not_run(smoke):
    gen = smoke[0]["parts"]["generation"]
    assert gen["hf"]["questions_per_s"] > 0 and gen["hf"]["seconds"] > 0
    assert gen["vllm"] is None and gen["vllm_skipped"] == "no GPU: vLLM runs on a GPU"
    assert "vLLM not run: no GPU" in smoke[1]


def test_a_failing_part_is_reported_and_the_others_still_run(tmp_path, monkeypatch, capsys):
    """One part failing (out of memory on a GPU, say) must not lose the others' figures: its error is in the JSON
    and the section, and the exit status is 1."""
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(REPO / "bench"))

    def out_of_memory(*args):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setitem(gpu_check.PARTS, "clip", out_of_memory)
    md = tmp_path / "B.md"
    argv = [
        "--smoke",
        "--parts",
        "clip",
        "info",
        "--json",
        str(tmp_path / "c.json"),
        "--write",
        "--output",
        str(md),
    ]
    assert gpu_check.main(argv) == 1
    report = json.loads((tmp_path / "c.json").read_text())
    assert "CUDA out of memory (simulated)" in report["errors"]["clip"] and report["parts"]["info"]["rows"]
    assert "**clip: failed** — `RuntimeError: CUDA out of memory (simulated)`" in md.read_text()


def test_the_real_check_refuses_to_run_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    proc = subprocess.run(
        [sys.executable, "bench/gpu_check.py"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and "no CUDA GPU here" in proc.stderr


@pytest.mark.gpu
def test_the_gpu_check_runs_one_part_on_the_gpu(tmp_path):
    """On a GPU machine: the info part at its real sizes (the whole check is `make gpu-check`)."""
    proc = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--parts", "info", "--json", str(tmp_path / "c.json")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "c.json").read_text())["parts"]["info"]["rows"]
    assert all(r["rel_diff"] < (1e-3 if r["dtype"] == "float32" else 1e-9) for r in rows)
