"""WiSE-FT after ``matrix-llm clip``: the sweep measures α·fine-tuned + (1-α)·start, its ends are the model
before training and the fine-tuned one, and the saved model is the fine-tuned one.

    .venv/bin/python -m pytest tests/modes/clip/test_wise_ft.py -q
"""

from __future__ import annotations

import json

import pytest
import torch
from test_clip import TINY

from matrix_llm.modes.clip import command as clip
from matrix_llm.modes.clip.wise_ft import snapshot, wise_ft_sweep


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_the_sweep_measures_each_mixture_and_gives_the_weights_back():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    start = snapshot(model)
    with torch.no_grad():
        model.weight.add_(1.0)
        model.bias.mul_(-2.0)
    final = _weights(model)

    def measure(m):
        return {"w": m.weight.sum().item(), "b": m.bias.sum().item(), "curve": {"not": "a number"}}

    rows = wise_ft_sweep(model, start, [1.0, 0.0, 0.25, 1.0], measure)  # ascending, once each
    assert [r["alpha"] for r in rows] == [0.0, 0.25, 1.0] and all("curve" not in r for r in rows)
    assert rows[0]["w"] == pytest.approx(start["weight"].sum().item())
    assert rows[2]["w"] == pytest.approx(final["weight"].sum().item())
    expected = 0.75 * start["bias"] + 0.25 * final["bias"]
    assert rows[1]["b"] == pytest.approx(expected.sum().item())
    assert all(
        torch.equal(v, final[k]) for k, v in model.state_dict().items()
    )  # the fine-tuned weights again

    def failing(m):
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        wise_ft_sweep(model, start, [0.5], failing)
    assert all(torch.equal(v, final[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match=r"every alpha must lie in \[0, 1\]"):
        wise_ft_sweep(model, start, [0.5, 1.5], measure)
    with pytest.raises(ValueError, match="not the same architecture"):
        wise_ft_sweep(model, snapshot(torch.nn.Linear(3, 4)), [0.5], measure)


def test_the_ends_of_the_clip_sweep_are_the_start_and_the_fine_tuned_model(tmp_path):
    """α = 0 measures what the same run measures when it does not learn (learning rate 0), α = 1 the fine-tuned
    model's end-of-run numbers, which the saved model still gives; report.md has the table, wise_ft.png the curves."""
    from matrix_llm.tools.eval import main as eval_main

    runs = {}
    for name, extra in (
        ("tuned", ["--wise_ft_alphas", "0", "0.5", "1"]),
        ("still", ["--learning_rate", "0"]),
    ):
        out = tmp_path / name
        assert clip.main([*TINY, "--output_dir", str(out), "--max_steps", "6", *extra]) == 0
        runs[name] = json.loads((out / "results.json").read_text())
    tuned, still = runs["tuned"], runs["still"]
    keys = (
        "zeroshot_top1",
        "zeroshot_top5",
        "image_to_text_R@1",
        "text_to_image_R@1",
        "image_to_text_mean_rank",
    )
    start, middle, end = tuned["wise_ft"]
    assert [start["alpha"], middle["alpha"], end["alpha"]] == [0.0, 0.5, 1.0]
    assert {k: start[k] for k in keys} == {k: still[k] for k in keys}
    assert {k: end[k] for k in keys} == {k: tuned[k] for k in keys}
    assert {k: start[k] for k in keys} != {k: end[k] for k in keys}  # the run learned something
    zs = tmp_path / "zs"
    assert eval_main(["zeroshot", "--model", str(tmp_path / "tuned"), "--output_dir", str(zs)]) == 0
    assert json.loads((zs / "results.json").read_text())["zeroshot_top1"] == end["zeroshot_top1"]
    report = (tmp_path / "tuned" / "report.md").read_text()
    assert "## WiSE-FT" in report and f"| 0.5 | {middle['zeroshot_top1']:.4f} |" in report
    assert (tmp_path / "tuned" / "wise_ft.png").is_file() and "wise_ft" not in still


@pytest.mark.parametrize(
    "extra, says",
    [
        (["--wise_ft_alphas", "0", "1.5"], "`wise_ft_alphas`: expected numbers in [0, 1]"),
        (["--wise_ft_alphas", "0.5", "--use_peft", "true"], "unset with use_peft"),
    ],
)
def test_wise_ft_settings_are_checked_before_any_model_loads(tmp_path, capsys, extra, says):
    assert clip.main([*TINY, "--output_dir", str(tmp_path), *extra]) == 2
    assert says in capsys.readouterr().err


@pytest.mark.slow
def test_the_sweep_runs_on_two_processes(tmp_path):
    """2 real CPU processes (DDP, gloo): every rank measures every mixture (the zero-shot set is encoded in shards
    and gathered), neither waits for the other in vain, and both end with the same fine-tuned weights."""
    from conftest import run_two_processes

    run_two_processes("clip", [*TINY, "--wise_ft_alphas", "0", "1"], tmp_path, "ddp")
    results = json.loads((tmp_path / "results.json").read_text())
    start, end = results["wise_ft"]
    assert end["zeroshot_top1"] == results["zeroshot_top1"] and start["alpha"] == 0.0
