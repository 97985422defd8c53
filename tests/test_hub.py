"""Model card content and the Hub upload (offline against a patched HfApi; one real test marked network).

.venv/bin/python -m pytest tests/test_hub.py -q
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from matrix_llm import hub
from matrix_llm.modes import LMConfig, LMObjective

ARGS = SimpleNamespace(
    matrix_loss_type="head",
    matrix_loss_weight=0.1,
    matrix_layer=-1,
    matrix_mu=None,
    matrix_log="eigh",
    matrix_taylor_order=4,
    matrix_max_tokens=2048,
    matrix_scope="local",
    learning_rate=2e-5,
    lr_scheduler_type="cosine",
    warmup_steps=0.03,
    weight_decay=0.0,
    num_train_epochs=3,
    max_steps=-1,
    per_device_train_batch_size=4,
    gradient_accumulation_steps=4,
    bf16=True,
    seed=42,
)


def _card(args, template=None):
    """The objective card of an LMConfig with ``args``' matrix_* settings (``args`` stands for a GPU run's
    training arguments, which a CPU machine cannot construct: bf16)."""
    config = LMConfig(
        output_dir="unused",
        report_to="none",
        **{k: v for k, v in vars(args).items() if k.startswith("matrix_")},
    )
    card = LMObjective.from_args(config).card(config)
    if template:
        card.details.append(f"Prompt template: `{template}`.")
    return card


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_card_metadata_and_body():
    card = hub.model_card(
        base_model="EleutherAI/llemma_7b",
        dataset="meta-math/MetaMathQA",
        eval_dataset="openai/gsm8k",
        training_args=ARGS,
        objective_card=_card(ARGS, template="alpaca"),
        metrics={"eval_loss": 0.5, "train_loss": 0.7, "eval_effective_rank": 12.5},
        peft=False,
        model_id="me/llemma-mce",
    )
    meta = _front_matter(card)
    assert meta["base_model"] == "EleutherAI/llemma_7b"
    assert meta["datasets"] == ["meta-math/MetaMathQA", "openai/gsm8k"]
    assert meta["library_name"] == "transformers"
    assert {"matrix-llm", "matrix-entropy", "sft"} <= set(meta["tags"])
    for text in (
        "| `matrix_loss_type` | head |",
        "| `matrix_loss_weight` | 0.1 |",
        "| `matrix_max_tokens` | 2048 |",
        "| `eval_effective_rank` | 12.5 |",
        "| `learning_rate` | 2e-05 |",
        "official code unreleased",
        "documented derivation",
        "@inproceedings{zhang2024matrix",
        "Matrix Information Theory for Self-Supervised Learning",
        "2305.17326",
        "ICML",
        'AutoModelForCausalLM.from_pretrained("me/llemma-mce")',
    ):
        assert text in card, text


def test_card_for_a_peft_adapter_and_a_local_base(tmp_path):
    args = SimpleNamespace(**{**vars(ARGS), "matrix_loss_type": "none"})
    card = hub.model_card(
        base_model=str(tmp_path),
        dataset="synthetic",
        training_args=args,
        objective_card=_card(args),
        metrics={},
        peft=True,
    )
    meta = _front_matter(card)
    assert meta["library_name"] == "peft" and "lora" in meta["tags"]
    assert "base_model" not in meta and "datasets" not in meta  # local paths are not Hub ids
    assert "AutoPeftModelForCausalLM" in card and "plain cross-entropy" in card


def test_final_metrics_takes_the_last_value_of_each_key():
    history = [
        {"loss": 3.0, "step": 1},
        {"eval_loss": 2.0, "step": 1},
        {"loss": 1.0, "lm_loss": 0.9, "step": 2},
    ]
    assert hub.final_metrics(history) == {"loss": 1.0, "eval_loss": 2.0, "lm_loss": 0.9}


@pytest.fixture
def fake_hub(monkeypatch):
    """Patch the HfApi methods both the Trainer and matrix_llm.hub call; record what would be uploaded."""
    import huggingface_hub

    calls = {"create_repo": [], "upload_folder": []}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"].append((repo_id, kwargs))
        return SimpleNamespace(repo_id=repo_id if "/" in repo_id else f"me/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        files = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file())
        readme = Path(folder_path, "README.md")
        calls["upload_folder"].append(
            {
                "repo_id": repo_id,
                "files": files,
                "readme": readme.read_text() if readme.exists() else None,
                **kwargs,
            }
        )
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/0")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return calls


def test_push_to_hub_uploads_the_folder(tmp_path, fake_hub):
    (tmp_path / "model.safetensors").write_bytes(b"x")
    (tmp_path / "README.md").write_text("card")
    hub.push_to_hub(tmp_path, repo_id="me/run", token="t", private=True)
    assert fake_hub["create_repo"] == [("me/run", {"token": "t", "private": True, "exist_ok": True})]
    (call,) = fake_hub["upload_folder"]
    assert call["repo_id"] == "me/run" and call["token"] == "t"
    assert "checkpoint-*" in call["ignore_patterns"] and "_*" in call["ignore_patterns"]
    assert call["files"] == ["README.md", "model.safetensors"]


def test_sft_push_to_hub_uploads_model_and_our_card(tmp_path, fake_hub):
    from conftest import SFT_TINY as TINY

    from matrix_llm.modes.lm import command as sft

    out = tmp_path / "run"
    argv = [
        *TINY,
        "--output_dir",
        str(out),
        "--max_steps",
        "1",
        "--push_to_hub",
        "true",
        "--hub_model_id",
        "me/tiny-mce",
        "--hub_token",
        "t",
    ]
    assert sft.main(argv) == 0
    assert fake_hub["create_repo"] and all(r[0] == "me/tiny-mce" for r in fake_hub["create_repo"])
    final = fake_hub["upload_folder"][-1]
    assert final["repo_id"] == "me/tiny-mce" and final["commit_message"] == "End of training"
    assert "model.safetensors" in final["files"] and "tokenizer.json" in final["files"]
    assert "matrix-entropy" in final["readme"] and "2305.17326" in final["readme"]


@pytest.mark.network
def test_real_push(tmp_path):
    token = os.environ.get("HF_TOKEN")
    repo = os.environ.get("MATRIX_LLM_TEST_REPO")
    if not token or not repo:
        pytest.skip("set HF_TOKEN and MATRIX_LLM_TEST_REPO (a scratch repo you own) to run the real upload")
    (tmp_path / "README.md").write_text(
        hub.model_card(
            base_model="tiny",
            dataset="synthetic",
            training_args=ARGS,
            objective_card=_card(ARGS),
            metrics={"loss": 1.0},
        )
    )
    info = hub.push_to_hub(
        tmp_path, repo_id=repo, token=token, private=True, commit_message="matrix_llm test"
    )
    assert info is not None
