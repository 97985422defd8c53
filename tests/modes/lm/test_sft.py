"""`matrix-llm sft` end to end with the offline tiny model (plain and LoRA), failure before loading, pad token.

.venv/bin/python -m pytest tests/modes/lm/test_sft.py -q
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from conftest import SFT_TINY as TINY
from conftest import free_port, launch_env, launch_two_nodes, slurm_env

from matrix_llm import runner
from matrix_llm.modes.lm import command as sft


def test_bad_config_fails_before_anything_loads(monkeypatch, capsys, tmp_path):
    def boom(*args, **kwargs):
        raise AssertionError("nothing may be loaded for a bad configuration")

    monkeypatch.setattr(sft, "load_raw_datasets", boom)
    monkeypatch.setattr(sft, "build_model_and_tokenizer", boom)
    argv = [
        *TINY,
        "--output_dir",
        str(tmp_path),
        "--lora_rr",
        "4",
        "--matrix_loss_type",
        "hed",
        "--lora_r",
        "x",
    ]
    assert sft.main(argv) == 2
    err = capsys.readouterr().err
    assert "3 configuration problem(s)" in err
    assert "did you mean `lora_r`" in err and "matrix_loss_type" in err and "`lora_r`" in err


def test_sft_trains_saves_and_writes_the_card(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "run"
    assert sft.main([*TINY, "--output_dir", str(out)]) == 0
    for name in ("model.safetensors", "config.json", "tokenizer.json", "README.md", "trainer_state.json"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.bin")) or [p.name for p in out.glob("*.bin")] == ["training_args.bin"]
    state = json.loads((out / "trainer_state.json").read_text())
    train_logs = [log for log in state["log_history"] if "loss" in log]
    assert len(train_logs) == 3
    for key in ("lm_loss", "matrix_loss", "matrix_entropy", "effective_rank"):
        assert all(math.isfinite(log[key]) for log in train_logs)
    assert any("eval_matrix_entropy" in log for log in state["log_history"])
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.vocab_size == len(tokenizer)
    card = (out / "README.md").read_text()
    assert "matrix-llm" in card and "matrix_loss_weight" in card and "2305.17326" in card


def test_sft_logs_generation_based_gsm8k_accuracy_when_asked(tmp_path):
    out = tmp_path / "run"
    argv = [
        *TINY,
        "--output_dir",
        str(out),
        "--eval_strategy",
        "steps",
        "--eval_steps",
        "3",
        "--gsm8k_eval_samples",
        "4",
        "--gsm8k_eval_max_new_tokens",
        "8",
    ]
    assert sft.main(argv) == 0
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    logged = [log for log in history if "eval_gsm8k_strict" in log]
    assert logged, "GSM8KEvalCallback did not log"
    for key in ("eval_gsm8k_strict", "eval_gsm8k_flexible", "eval_gsm8k_no_answer"):
        assert 0.0 <= logged[-1][key] <= 1.0
    # the model card's model-index carries the final GSM8K numbers, as the Hub parses them
    from conftest import card_eval_results

    protocol = "prompt `qa`, 0-shot, greedy, first 4 problems"
    assert card_eval_results(out) == {
        f"GSM8K strict-match ({protocol})": logged[-1]["eval_gsm8k_strict"],
        f"GSM8K flexible-match ({protocol})": logged[-1]["eval_gsm8k_flexible"],
    }
    card = (out / "README.md").read_text()
    assert "train_runtime" not in card and "docs/formulations.md" not in card
    assert (
        f"`lm_eval --model hf --model_args pretrained={out} --tasks gsm8k --num_fewshot 0 --batch_size 16`"
        in card
    )


def test_gsm8k_eval_options_are_validated_before_loading(capsys, tmp_path):
    argv = [*TINY, "--output_dir", str(tmp_path), "--gsm8k_eval_samples", "-1", "--gsm8k_eval_prompt", "nope"]
    assert sft.main(argv) == 2
    err = capsys.readouterr().err
    assert "gsm8k_eval_samples" in err and "gsm8k_eval_prompt" in err


def test_sft_peft_saves_a_non_empty_loadable_adapter(tmp_path):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from matrix_llm.models.tiny import build_llama

    out = tmp_path / "lora"
    argv = [
        *TINY,
        "--output_dir",
        str(out),
        "--use_peft",
        "true",
        "--lora_r",
        "4",
        "--lora_target_modules",
        "q_proj",
        "v_proj",
        "--learning_rate",
        "1e-2",
    ]
    assert sft.main(argv) == 0
    assert not (out / "model.safetensors").exists()
    weights = load_file(str(out / "adapter_model.safetensors"))
    assert weights and all(v.numel() for v in weights.values())
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and any(v.abs().max() > 0 for v in lora_b)  # B starts at zero: it was trained
    card = (out / "README.md").read_text()
    assert "library_name: peft" in card
    tokenizer = AutoTokenizer.from_pretrained(out)
    base = build_llama(tokenizer, hidden_size=32, num_layers=2, num_heads=2, seed=0)
    model = PeftModel.from_pretrained(base, out)
    loaded = {k: v for k, v in model.state_dict().items() if "lora_B" in k}
    assert any(torch.equal(v, lora_b[0]) for v in loaded.values())
    assert runner.check_adapter(out) > 0


def test_check_adapter_rejects_an_empty_file(tmp_path):
    import torch
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(0)}, str(tmp_path / "adapter_model.safetensors"))
    with pytest.raises(RuntimeError, match="empty"):
        runner.check_adapter(tmp_path)


def test_missing_pad_token_gets_a_distinct_one(tiny_tokenizer, tiny_model):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.pad_token = tok.eos_token  # the silent trap: pad == eos
    tok.add_special_tokens({"additional_special_tokens": ["<extra>"]})
    tiny_model.resize_token_embeddings(len(tok))
    n = len(tok)
    assert sft.ensure_pad_token(tok, tiny_model)
    assert tok.pad_token == sft.PAD_TOKEN and tok.pad_token_id != tok.eos_token_id
    assert len(tok) in (n, n + 1)  # `<pad>` is reused if the vocabulary already has it, else added
    assert tiny_model.get_input_embeddings().weight.shape[0] >= len(tok)
    assert tiny_model.config.pad_token_id == tok.pad_token_id
    assert not sft.ensure_pad_token(tok, tiny_model)  # idempotent


# ---------------------------------------------------------------------------------------------------------
# real 2-process runs on CPU (gloo): DDP, DeepSpeed ZeRO-2, ZeRO-3
# ---------------------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[3]


def _torchrun(out, *extra, timeout=600, launcher=None, use_cpu=True, nodes=False):
    """Run tests/modes/lm/sft_dist_worker.py on 2 processes (torchrun by default, the given launcher command, or
    two localhost "nodes" with ``nodes``) and return each rank's record."""
    import subprocess
    import sys

    cmd = [
        str(REPO / "tests" / "modes" / "lm" / "sft_dist_worker.py"),
        *TINY,
        "--output_dir",
        str(out),
        "--use_cpu",
        str(use_cpu).lower(),
        "--per_device_train_batch_size",
        "2",
        "--eval_split",
        "null",
        *extra,
    ]
    if nodes:
        launch_two_nodes(cmd, out / "logs", timeout=timeout)
    else:
        launcher = launcher or [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
        ]
        env = launch_env()
        proc = subprocess.run(
            [*launcher, *cmd], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def _check_ranks(out, ranks):
    import torch
    from transformers import AutoModelForCausalLM

    assert [r["world_size"] for r in ranks] == [2, 2] and [r["rank"] for r in ranks] == [0, 1]
    a, b = ranks[0]["checksums"], ranks[1]["checksums"]
    assert a.keys() == b.keys() and a
    for name in a:
        assert a[name] == pytest.approx(b[name], rel=1e-6, abs=1e-6), name
    # the saved model loads back and is the trained one
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    saved = {n: float(p.detach().double().sum()) for n, p in model.named_parameters()}
    for name, value in saved.items():
        assert value == pytest.approx(a[name][0], rel=1e-4, abs=1e-4), name


def test_sft_bf16_autocast_on_cpu(tmp_path):
    """`--bf16 true` trains on a CPU as well (torch CPU autocast): finite LM and matrix losses (the matrix loss
    computed in float32 outside autocast), a saved model. The GPU version below adds the CUDA path."""
    out = tmp_path / "bf16"
    assert sft.main([*TINY, "--output_dir", str(out), "--bf16", "true", "--eval_split", "null"]) == 0
    logs = [
        log for log in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in log
    ]
    assert len(logs) == 3 and all(
        math.isfinite(log["matrix_loss"]) and math.isfinite(log["lm_loss"]) for log in logs
    )
    assert (out / "model.safetensors").is_file()


@pytest.mark.gpu
def test_sft_bf16_on_one_gpu(tmp_path):
    out = tmp_path / "gpu"
    assert sft.main([*TINY, "--output_dir", str(out), "--use_cpu", "false", "--bf16", "true"]) == 0
    logs = [
        log for log in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in log
    ]
    assert logs and all(math.isfinite(log["matrix_loss"]) and math.isfinite(log["lm_loss"]) for log in logs)


@pytest.mark.multi_gpu
def test_fsdp2_recipe_on_two_gpus(tmp_path):
    """FSDP cannot run on CPU through the HF stack (docs: TESTING.md), so the fsdp2 profile is tested here only."""
    import sys

    out = tmp_path / "fsdp2"
    launcher = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / "recipes" / "accelerate" / "fsdp2.yaml"),
        "--num_processes",
        "2",
    ]
    ranks = _torchrun(out, "--bf16", "true", launcher=launcher, use_cpu=False)
    assert ranks[0]["distributed_type"].endswith("FSDP")
    _check_ranks(out, ranks)


@pytest.mark.gpu
def test_fsdp2_recipe_on_one_gpu(tmp_path):
    """The fsdp2 profile on one GPU: FSDP2 wraps the model, the matrix loss reads the LM-head weight through
    features.full_weight (a DTensor shard when resharded) and trains, finite, in bf16."""
    import subprocess

    out = tmp_path / "fsdp2"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
    launch += [str(REPO / "recipes" / "accelerate" / "fsdp2.yaml"), "--num_processes", "1"]
    worker = [str(REPO / "tests" / "modes" / "lm" / "sft_dist_worker.py"), *TINY, "--output_dir", str(out)]
    worker += ["--use_cpu", "false", "--bf16", "true", "--eval_split", "null"]
    proc = subprocess.run(
        [*launch, *worker], env=launch_env(), cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    record = json.loads((out / "rank0.json").read_text())
    assert record["distributed_type"].endswith("FSDP") and record["world_size"] == 1
    logs = [
        log for log in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in log
    ]
    assert logs and all(math.isfinite(log["matrix_loss"]) for log in logs)


@pytest.mark.slow
def test_two_process_ddp(tmp_path):
    out = tmp_path / "ddp"
    ranks = _torchrun(out)
    assert ranks[0]["distributed_type"].endswith("MULTI_CPU")
    _check_ranks(out, ranks)
    # scope local: the matrix loss sees this rank's tokens only (at most matrix_max_tokens=64 of them)
    assert all(seen == min(local, 64) for r in ranks for local, seen in r["calls"])


@pytest.mark.slow
def test_two_process_ddp_global_scope_gathers_the_batch(tmp_path):
    out = tmp_path / "global"
    ranks = _torchrun(out, "--matrix_scope", "global", "--matrix_max_tokens", "null")
    _check_ranks(out, ranks)
    calls0, calls1 = ranks[0]["calls"], ranks[1]["calls"]
    assert len(calls0) == len(calls1) > 0
    for (l0, s0), (l1, s1) in zip(calls0, calls1, strict=True):
        assert s0 == s1 == l0 + l1  # every rank's loss sees both ranks' tokens


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_two_process_deepspeed(tmp_path, stage):
    pytest.importorskip("deepspeed")
    out = tmp_path / f"zero{stage}"
    ranks = _torchrun(out, "--deepspeed", str(REPO / "recipes" / "deepspeed" / f"zero{stage}.json"))
    assert ranks[0]["distributed_type"].endswith("DEEPSPEED")
    _check_ranks(out, ranks)
    # under ZeRO-3 the partitioned LM-head weight was gathered for the matrix loss
    assert all(r.get("zero3_head_gathered", False) == (stage == 3) for r in ranks)


@pytest.mark.slow
def test_two_process_deepspeed_zero3_lora_adapter_is_not_empty(tmp_path):
    pytest.importorskip("deepspeed")
    out = tmp_path / "zero3_lora"
    zero3 = str(REPO / "recipes" / "deepspeed" / "zero3.json")
    ranks = _torchrun(
        out, "--deepspeed", zero3, "--use_peft", "true", "--lora_r", "4", "--learning_rate", "1e-2"
    )
    assert [r["world_size"] for r in ranks] == [2, 2]
    # DeepSpeed ZeRO-3 really ran (a plain DDP run would pass the adapter checks too)
    assert ranks[0]["distributed_type"].endswith("DEEPSPEED") and all(r["zero3_head_gathered"] for r in ranks)
    assert runner.check_adapter(out) > 0  # sft itself raises on an empty adapter; check again from outside
    from safetensors.torch import load_file

    lora_b = [v for k, v in load_file(str(out / "adapter_model.safetensors")).items() if "lora_B" in k]
    assert lora_b and any(v.abs().max() > 0 for v in lora_b)


# one SGD step at lr 1, no clipping: the update is the gradient itself
SGD_STEP = [
    "--optim",
    "sgd",
    "--learning_rate",
    "1.0",
    "--max_grad_norm",
    "0",
    "--lr_scheduler_type",
    "constant",
]
SGD_STEP += ["--max_steps", "1", "--data_seed", "0"]


def _one_sgd_step(out, *extra, world_size=1, batch=4, nodes=False):
    """Parameters after one SGD step at lr 1 (1 process x batch ``batch``, or 2 processes x batch 2: on one
    machine, or on two localhost "nodes" with ``nodes``)."""
    from safetensors.torch import load_file

    step = [*extra, *SGD_STEP]
    if world_size == 2:
        ranks = _torchrun(out, *step, nodes=nodes)
        _check_ranks(
            out, ranks
        )  # one 2-process job (not two 1-process jobs), the same parameters on both ranks
    else:
        argv = [
            *TINY,
            "--output_dir",
            str(out),
            "--eval_split",
            "null",
            "--per_device_train_batch_size",
            str(batch),
            *step,
        ]
        assert sft.main(argv) == 0
        state = json.loads((out / "trainer_state.json").read_text())
        assert (
            next(log["grad_norm"] for log in state["log_history"] if "grad_norm" in log) > 1e-3
        )  # a real update
    return load_file(str(out / "model.safetensors"))


@pytest.mark.slow
def test_two_processes_equal_one_process_for_the_token_loss(tmp_path):
    """Weight 0: 2 ranks x batch 2 give the same update as 1 process x batch 4 (num_items_in_batch counted over
    both ranks, average_tokens_across_devices)."""
    import torch

    single = _one_sgd_step(tmp_path / "single", "--matrix_loss_weight", "0")
    ddp = _one_sgd_step(tmp_path / "ddp", "--matrix_loss_weight", "0", world_size=2)
    for key in single:
        torch.testing.assert_close(single[key], ddp[key], rtol=0, atol=1e-5)


GLOBAL_MATRIX = ["--matrix_loss_weight", "0.5", "--matrix_scope", "global", "--matrix_max_tokens", "null"]


@pytest.fixture(scope="module")
def single_process_global(tmp_path_factory):
    """1 process x batch 4, one SGD step: the reference update with the global-scope matrix term, and without."""
    root = tmp_path_factory.mktemp("global")
    return _one_sgd_step(root / "single", *GLOBAL_MATRIX), _one_sgd_step(
        root / "ce", "--matrix_loss_weight", "0"
    )


def _matrix_update_error(single, ce, ranks):
    """(|single - ce|, |single - ranks|): the matrix term's own effect on the update, and the ranks' error."""
    import torch

    def norm(a, b):
        return float(torch.sqrt(sum(((a[k].double() - b[k].double()) ** 2).sum() for k in a)))

    return norm(single, ce), norm(single, ranks)


@pytest.mark.slow
@pytest.mark.parametrize("nodes", [False, True], ids=["one-machine", "two-localhost-nodes"])
def test_two_processes_global_matrix_loss_equals_one_process(tmp_path, nodes, single_process_global):
    """``matrix_scope=global``: each rank's matrix loss sees the gathered batch, and the autograd-aware gather
    makes the update that of one process on the concatenated batch. Compared against the matrix term's own
    contribution to the update (float32 eigh round-off differs with the token order across ranks). Also as two
    "nodes": two `accelerate launch` processes with --num_machines 2 --machine_rank 0/1 on 127.0.0.1."""
    single, ce = single_process_global
    ddp = _one_sgd_step(tmp_path / "ddp", *GLOBAL_MATRIX, world_size=2, nodes=nodes)

    contribution, error = _matrix_update_error(single, ce, ddp)
    assert contribution > 1e-2  # the matrix term moves the parameters
    assert error < 1e-3 * contribution, (float(error), float(contribution))


@pytest.fixture(scope="module")
def single_process_ga4(tmp_path_factory):
    """1 process x batch 2 x GA 4: the reference update, with and without the (local-scope) matrix term."""
    root = tmp_path_factory.mktemp("ga4")
    ga4 = [
        "--gradient_accumulation_steps",
        "4",
        "--matrix_max_tokens",
        "null",
    ]  # no sub-sampling: no RNG stream
    with_matrix = _one_sgd_step(root / "mce", "--matrix_loss_weight", "0.5", *ga4, batch=2)
    ce = _one_sgd_step(root / "ce", "--matrix_loss_weight", "0", *ga4, batch=2)
    return with_matrix, ce


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["ddp", "zero2", "zero3"])
def test_two_ranks_with_accumulation_equal_one_process(tmp_path, backend, single_process_ga4):
    """2 ranks x batch 2 x GA 2 (matrix_scope local) give the update of 1 process x batch 2 x GA 4: the same
    four micro-batches, the token loss normalised over all of them, the matrix term their mean. The tolerance is
    relative to the matrix term's own effect on the update. Mutation caught: the matrix term multiplied (or
    divided) by num_processes in MatrixTrainer.compute_loss; the old checks (ranks agree with each other) pass it.
    """
    if backend != "ddp":
        pytest.importorskip("deepspeed")
    extra = (
        [] if backend == "ddp" else ["--deepspeed", str(REPO / "recipes" / "deepspeed" / f"{backend}.json")]
    )
    ranks_out = tmp_path / backend
    ddp = _one_sgd_step(
        ranks_out,
        "--matrix_loss_weight",
        "0.5",
        "--gradient_accumulation_steps",
        "2",
        "--matrix_max_tokens",
        "null",
        *extra,
        world_size=2,
    )
    single, ce = single_process_ga4

    effect, error = _matrix_update_error(single, ce, ddp)
    assert effect > 1e-2  # the matrix term moves the parameters
    assert error < 1e-4 * effect, (error, effect)


@pytest.mark.slow
def test_the_slurm_template_trains_on_two_localhost_nodes_with_zero2_and_resumes(
    tmp_path, single_process_global
):
    """recipes/slurm/train.sbatch run as on a 2-node SLURM allocation (the srun / scontrol stand-ins of
    tests/distributed/fake_slurm: srun starts recipes/slurm/node_launch.sh once per node with SLURM_NODEID 0 / 1,
    the nodelist names two localhost hosts) with its DeepSpeed ZeRO-2 accelerate profile (mixed precision off:
    float32 on a CPU): the SGD step equals one process on the concatenated batch; the same script run again (a
    requeue) finds the checkpoint and resumes from it."""
    import subprocess

    import yaml
    from safetensors.torch import load_file

    pytest.importorskip("deepspeed")
    profile = yaml.safe_load((REPO / "recipes" / "accelerate" / "deepspeed_zero2.yaml").read_text())
    assert profile["deepspeed_config"]["deepspeed_multinode_launcher"] == "standard"
    profile["mixed_precision"] = "no"
    (tmp_path / "zero2.yaml").write_text(yaml.safe_dump(profile))
    config = dict(zip(TINY[::2], TINY[1::2], strict=True))
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({k.removeprefix("--"): v for k, v in config.items()}))
    out = tmp_path / "run"
    env = slurm_env(
        MAIN_PROCESS_PORT=str(free_port()),
        RDZV_TIMEOUT="120",
        ACCELERATE_CONFIG=str(tmp_path / "zero2.yaml"),
        COMMAND="sft",
        CONFIG=str(tmp_path / "tiny.yaml"),
        OUTPUT_DIR=str(out),
        SCONTROL_LOG=str(tmp_path / "scontrol.log"),
    )

    def sbatch(*args: str) -> subprocess.CompletedProcess:  # the job as SLURM would start it
        return subprocess.run(
            ["bash", "recipes/slurm/train.sbatch", *args],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
        )

    step = [*GLOBAL_MATRIX, *SGD_STEP, "--per_device_train_batch_size", "2", "--eval_split", "null"]
    first = sbatch(*step, "--save_strategy", "steps", "--save_steps", "1")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-6000:]
    run = json.loads((out / "matrix_llm_run.json").read_text())
    assert run["world_size"] == 2 and run["distributed_type"].endswith("DEEPSPEED")
    single, ce = single_process_global
    contribution, error = _matrix_update_error(single, ce, load_file(str(out / "model.safetensors")))
    assert contribution > 1e-2 and error < 1e-3 * contribution, (error, contribution)
    assert "resuming" not in first.stdout and not (tmp_path / "scontrol.log").exists()

    # the requeued job: the same script, two steps now; it resumes from checkpoint-1
    step[step.index("--max_steps") + 1] = "2"
    second = sbatch(*step, "--save_strategy", "steps", "--save_steps", "1")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-6000:]
    assert f"resuming from the last checkpoint in {out}" in second.stdout
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert [log["step"] for log in state["log_history"] if "loss" in log] == [1, 2]
