"""Recipes: every training YAML parses into the dataclasses; launch profiles and DeepSpeed JSON are complete;
every file opens with a launch command naming its own path.

    .venv/bin/python -m pytest tests/test_recipes.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from matrix_llm.modes.classify import command as classify
from matrix_llm.modes.clip import command as clip
from matrix_llm.modes.lm import command as sft
from matrix_llm.modes.ssl import command as ssl

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
PACKAGED = REPO / "matrix_llm" / "recipes"  # shipped as package data (the demo recipes)
ALL_YAML = sorted(RECIPES.rglob("*.yaml")) + sorted(PACKAGED.rglob("*.yaml"))
PROFILES = sorted((RECIPES / "accelerate").glob("*.yaml"))
TRAINING = [p for p in ALL_YAML if p.parent.name != "accelerate"]
DEEPSPEED = sorted((RECIPES / "deepspeed").glob("*.json"))


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_the_expected_recipes_exist():
    names = {_rel(p) for p in ALL_YAML + DEEPSPEED}
    for name in [
        "recipes/llemma-7b/gsm8k/ce.yaml",
        "recipes/llemma-7b/gsm8k/mce.yaml",
        "recipes/llemma-7b/metamathqa/ce.yaml",
        "recipes/llemma-7b/metamathqa/mce.yaml",
        "matrix_llm/recipes/demo/ce.yaml",
        "matrix_llm/recipes/demo/mce.yaml",
        "matrix_llm/recipes/demo/ssl.yaml",
        "recipes/accelerate/single_gpu.yaml",
        "recipes/accelerate/multi_gpu.yaml",
        "recipes/accelerate/deepspeed_zero2.yaml",
        "recipes/accelerate/deepspeed_zero3.yaml",
        "recipes/accelerate/fsdp2.yaml",
        "recipes/deepspeed/zero2.json",
        "recipes/deepspeed/zero3.json",
    ]:
        assert name in names, name


@pytest.mark.parametrize("path", TRAINING, ids=_rel)
def test_training_recipe_parses(path, tmp_path):
    """Each recipe parses with the command of its `objective` (sft for lm, classify for classification)."""
    import torch

    # hardware-only switches that TrainingArguments checks against this machine (bf16/tf32 need a GPU)
    hardware = [] if torch.cuda.is_available() else ["--use_cpu", "true", "--tf32", "false"]
    objective = yaml.safe_load(path.read_text()).get("objective", "lm")
    command = {"lm": sft, "classification": classify, "ssl": ssl, "clip": clip}[objective]
    model_args, data_args, training_args = command.parse_args(
        ["--config", str(path), "--output_dir", str(tmp_path), *hardware]
    )
    assert model_args.model_name_or_path and data_args.dataset_name
    assert training_args.objective == objective
    if objective == "lm":
        assert training_args.matrix_loss_type in ("none", "head", "relation", "alignment")


@pytest.mark.parametrize("path", ALL_YAML + DEEPSPEED, ids=_rel)
def test_opens_with_its_launch_command(path):
    if path.suffix == ".json":  # JSON has no comments: the README gives its launch command instead
        readme = (REPO / "README.md").read_text()
        assert f"--deepspeed {_rel(path)}" in readme, f"README names no launch command for {_rel(path)}"
        return
    head = path.read_text().splitlines()[:3]
    first = head[0]
    assert first.startswith("# ") and ("accelerate launch" in first or "matrix-llm " in first), first
    assert _rel(path) in " ".join(head), head


def test_training_recipe_sections():
    for path in TRAINING:
        text = path.read_text()
        for section in ("### model", "### method", "### dataset", "### output", "### train"):
            assert section in text, (path, section)


def test_metamath_hyper_parameters():
    for path in (RECIPES / "llemma-7b").rglob("*.yaml"):
        cfg = yaml.safe_load(path.read_text())
        assert cfg["model_name_or_path"] == "EleutherAI/llemma_7b"
        assert float(cfg["learning_rate"]) == pytest.approx(2e-5)
        assert cfg["lr_scheduler_type"] == "cosine" and cfg["warmup_steps"] == pytest.approx(0.03)
        assert cfg["weight_decay"] == 0 and cfg["num_train_epochs"] == 3 and cfg["bf16"] is True
        assert cfg["max_length"] == 512 and cfg["template"] == "alpaca"
        assert cfg["per_device_train_batch_size"] * cfg["gradient_accumulation_steps"] * 8 == 128
        if "metamathqa" in str(path):
            assert cfg["dataset_name"] == "meta-math/MetaMathQA"
        assert (cfg["matrix_loss_type"] == "none") == (path.stem == "ce")


@pytest.mark.parametrize("path", PROFILES, ids=_rel)
def test_accelerate_profiles(path):
    cfg = yaml.safe_load(path.read_text())
    for key in (
        "compute_environment",
        "distributed_type",
        "mixed_precision",
        "num_processes",
        "num_machines",
    ):
        assert key in cfg, (path, key)
    expected = {
        "single_gpu": "NO",
        "multi_gpu": "MULTI_GPU",
        "deepspeed_zero2": "DEEPSPEED",
        "deepspeed_zero3": "DEEPSPEED",
        "fsdp2": "FSDP",
    }[path.stem]
    assert cfg["distributed_type"] == expected
    if expected == "DEEPSPEED":
        ds = cfg["deepspeed_config"]
        assert ds["zero_stage"] == int(path.stem[-1])
        if ds["zero_stage"] == 3:
            assert ds["zero3_init_flag"] is True and ds["zero3_save_16bit_model"] is True
    if expected == "FSDP":
        assert cfg["fsdp_config"]["fsdp_version"] == 2


@pytest.mark.parametrize("path", DEEPSPEED, ids=_rel)
def test_deepspeed_json(path):
    cfg = json.loads(path.read_text())
    for key in (
        "train_batch_size",
        "train_micro_batch_size_per_gpu",
        "gradient_accumulation_steps",
        "gradient_clipping",
    ):
        assert cfg[key] == "auto", key
    assert cfg["bf16"]["enabled"] == "auto"
    stage = cfg["zero_optimization"]["stage"]
    assert stage == int(path.stem[-1])
    if stage == 3:
        assert cfg["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


@pytest.mark.parametrize("path", sorted((RECIPES / "slurm").iterdir()), ids=_rel)
def test_slurm_files_open_with_their_launch_command(path):
    """recipes/slurm: a shebang (sbatch and srun run them as scripts), then the command that starts the file."""
    shebang, first = path.read_text().splitlines()[:2]
    assert shebang.startswith("#!") and "bash" in shebang
    assert first.startswith(("# sbatch ", "# srun ")) and _rel(path) in first, first
