"""Shared fixtures: seeding, the shared GSM8K files, and a tiny offline Llama + tokenizer."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_GSM8K = REPO.parent / "shared" / "data" / "gsm8k"

_CORPUS = [
    (
        "Question: Tom has 12 apples and buys 35 more. How many apples does he have?\n"
        "Answer: Tom has 12 + 35 = 47 apples.\n#### 47"
    ),
    "Question: A box holds 6 pens. How many pens are in 4 boxes?\nAnswer: 6 * 4 = 24 pens.\n#### 24",
    (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request."
        "\n\n### Instruction:\nSara had 90 dollars and spent 15. How much is left?\n\n### Response:"
        " 90 - 15 = 75\n#### 75"
    ),
]


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def gsm8k_dir() -> Path:
    if not (SHARED_GSM8K / "train.jsonl").exists():
        pytest.fail(f"the shared GSM8K files are missing: expected {SHARED_GSM8K}/train.jsonl and test.jsonl")
    return SHARED_GSM8K


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from matrix_llm.models.tiny import build_tokenizer

    return build_tokenizer(_CORPUS * 20, vocab_size=320)


@pytest.fixture
def tiny_model(tiny_tokenizer):
    from matrix_llm.models.tiny import build_llama

    return build_llama(tiny_tokenizer, hidden_size=64, num_layers=2, num_heads=4, seed=0)


def pytest_collection_modifyitems(config, items):
    """`gpu` / `multi_gpu` tests skip without CUDA GPUs; `network` tests run only with MATRIX_LLM_TEST_NETWORK=1
    (the Hub is unreachable on CI and on most dev boxes, and a test must not hang on it)."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    network = os.environ.get("MATRIX_LLM_TEST_NETWORK") == "1"
    for item in items:
        if "gpu" in item.keywords and gpus < 1:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if "multi_gpu" in item.keywords and gpus < 2:
            item.add_marker(pytest.mark.skip(reason="needs two CUDA GPUs"))
        if "network" in item.keywords and not network:
            item.add_marker(
                pytest.mark.skip(reason="needs the Hugging Face Hub: set MATRIX_LLM_TEST_NETWORK=1")
            )


def nonzero_lora(model, seed=0, scale=0.3):
    """A copy of ``model`` (PEFT modifies the model it wraps) in a LoRA adapter whose B matrices are non-zero (seeded), so that the adapted model
    computes a different function from the base model: LoRA's zero-initialised B would make any
    "the adapter is used" check pass without the adapter."""
    import copy

    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(
        copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"])
    )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=g) * scale)
    return peft_model


def merged_copy(peft_model):
    """A plain model with the adapter merged into its weights (the reference an adapter must reproduce)."""
    import copy

    return copy.deepcopy(peft_model).merge_and_unload().eval()


class StepRecorder(TrainerCallback):
    """A TrainerCallback recording the step a run starts at and every optimizer step it executes (resume
    tests: a resumed run must start at the checkpoint's step and run only the remaining steps)."""

    def __init__(self):
        self.start, self.executed = None, []

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        self.executed.append(state.global_step)


class Killed(RuntimeError):
    """Raised by :class:`KillAfterSave`: the process 'dies' right after a checkpoint was written."""


class KillAfterSave(TrainerCallback):
    """Kills the run (raises :class:`Killed`) once the checkpoint of ``step`` is saved."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Killed(f"killed after checkpoint-{self.step}")


class SigtermAt(TrainerCallback):
    """Sends this process a real SIGTERM at the end of optimizer step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGTERM)


def watch_trainer(monkeypatch, callback) -> None:
    """The commands run a MatrixTrainer with ``callback`` added (after the objective's own); calling it again
    replaces the earlier one (both subclass the real MatrixTrainer)."""
    import matrix_llm.trainer

    real = getattr(matrix_llm.trainer.MatrixTrainer, "_real", matrix_llm.trainer.MatrixTrainer)

    class Watched(real):
        _real = real

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(callback)

    monkeypatch.setattr(matrix_llm.trainer, "MatrixTrainer", Watched)


def kill_and_resume(main, argv, tmp_path, monkeypatch) -> tuple[Path, Path]:
    """Runs ``main(argv)`` (4 steps, a checkpoint every 2) uninterrupted into ``tmp_path/full``, then killed after
    checkpoint-2 and resumed from it into ``tmp_path/cut``; asserts the resumed run starts at step 2 and runs only
    steps 3 and 4. Returns the two output folders."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main([*argv, "--output_dir", str(full)]) == 0
    watch_trainer(monkeypatch, KillAfterSave(2))
    with pytest.raises(Killed):
        main([*argv, "--output_dir", str(cut)])
    steps = StepRecorder()
    watch_trainer(monkeypatch, steps)
    assert main([*argv, "--output_dir", str(cut), "--resume_from_checkpoint", "true"]) == 0
    assert steps.start == 2 and steps.executed == [3, 4]
    return full, cut


def launch_env() -> dict[str, str]:
    """The environment of a multi-process test run: one thread per process, offline, this checkout's code, the
    DeepSpeed ops compiled once under the venv."""
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
    )
    env.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".venv" / "torch_extensions"))
    return env


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two_nodes(cmd: list[str], logs: Path, *, env: dict | None = None, timeout: int = 600) -> None:
    """``cmd`` (a script and its arguments) as a 2-machine job on localhost: two `accelerate launch` processes
    with ``--num_machines 2 --machine_rank 0/1 --main_process_ip 127.0.0.1`` (static rendezvous, one gloo process
    per "node"), started together; asserts both exit 0 (their output is in ``logs``/node{r}.log)."""
    import subprocess
    import sys

    logs.mkdir(parents=True, exist_ok=True)
    port = str(free_port())
    procs = []
    for r in (0, 1):
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "2"]
        launch += ["--num_processes", "2", "--machine_rank", str(r), "--main_process_ip", "127.0.0.1"]
        launch += ["--main_process_port", port, "--rdzv_conf", "timeout=120"]
        with open(logs / f"node{r}.log", "w") as log:
            procs.append(
                subprocess.Popen([*launch, *cmd], env=env or launch_env(), cwd=REPO, stdout=log, stderr=log)
            )
    try:
        codes = [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for r, code in enumerate(codes):
        assert code == 0, f"node {r} exited {code}:\n" + (logs / f"node{r}.log").read_text()[-6000:]


def slurm_env(**overrides: str) -> dict[str, str]:
    """:func:`launch_env` inside a simulated 2-node SLURM allocation on localhost: the srun / scontrol stand-ins of
    tests/distributed/fake_slurm and this interpreter's scripts (``accelerate``) first on ``PATH``, SLURM's
    variables, recipes/slurm/node_launch.sh's settings (``ACCELERATE_CONFIG``, ``GPUS_PER_NODE``); an override of
    ``"<unset>"`` leaves that variable out."""
    import sys

    env = launch_env()
    fake_slurm = REPO / "tests" / "distributed" / "fake_slurm"
    env.update(
        PATH=os.pathsep.join([str(fake_slurm), str(Path(sys.executable).parent), env["PATH"]]),
        SLURM_NNODES="2",
        SLURM_NODEID="0",
        SLURM_JOB_NODELIST="127.0.0.1,127.0.0.1",
        SLURM_JOB_ID="7",
        ACCELERATE_CONFIG=str(REPO / "recipes" / "accelerate" / "multi_gpu.yaml"),
        GPUS_PER_NODE="1",
    )
    env.update(overrides)
    return {k: v for k, v in env.items() if v != "<unset>"}


def run_two_processes(
    command: str, argv: list[str], out: Path, backend: str, *, use_cpu: bool = True, nodes: bool = False
) -> tuple[dict, dict]:
    """`matrix-llm {command}` on 2 processes (torchrun, or two localhost "nodes" of one process each with
    ``nodes``: :func:`launch_two_nodes`; CPU and gloo unless ``use_cpu`` is false; ``backend``: ddp, zero2 or zero3)
    through tests/distributed/mode_dist_worker.py, 3 steps; asserts every parameter is the same on both ranks and
    returns their checksums."""
    import json
    import subprocess
    import sys

    if backend != "ddp":
        pytest.importorskip("deepspeed")
    extra = (
        [] if backend == "ddp" else ["--deepspeed", str(REPO / "recipes" / "deepspeed" / f"{backend}.json")]
    )
    cmd = [
        str(REPO / "tests" / "distributed" / "mode_dist_worker.py"),
        command,
        *argv,
        "--output_dir",
        str(out),
        "--max_steps",
        "3",
        "--eval_split",
        "null",
        "--use_cpu",
        str(use_cpu).lower(),
        *extra,
    ]
    if nodes:
        launch_two_nodes(cmd, out / "logs")
    else:
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        proc = subprocess.run(
            [*torchrun, *cmd], env=launch_env(), cwd=REPO, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["distributed_type"].endswith(
        "DEEPSPEED" if backend != "ddp" else "MULTI_CPU" if use_cpu else "MULTI_GPU"
    )
    a, b = ranks[0]["checksums"], ranks[1]["checksums"]
    assert a and a.keys() == b.keys()
    for name in a:
        assert a[name] == pytest.approx(b[name], rel=1e-6, abs=1e-6), name
    return a, b


# `matrix-llm sft` on a tiny Llama and synthetic problems, in seconds (the tests of every folder use it)
SFT_TINY = [
    "--model_name_or_path",
    "tiny",
    "--tiny_hidden_size",
    "32",
    "--tiny_num_layers",
    "2",
    "--tiny_num_heads",
    "2",
    "--tiny_vocab_size",
    "320",
    "--dataset_name",
    "synthetic",
    "--synthetic_train_size",
    "24",
    "--synthetic_eval_size",
    "8",
    "--eval_split",
    "test",
    "--max_length",
    "192",
    "--per_device_train_batch_size",
    "4",
    "--per_device_eval_batch_size",
    "8",
    "--max_steps",
    "3",
    "--logging_steps",
    "1",
    "--learning_rate",
    "1e-3",
    "--save_strategy",
    "no",
    "--report_to",
    "none",
    "--use_cpu",
    "true",
    "--disable_tqdm",
    "true",
    "--matrix_loss_weight",
    "0.5",
    "--matrix_max_tokens",
    "64",
    "--seed",
    "0",
]


def card_eval_results(run_dir) -> dict[str, float]:
    """The evaluation results of a run's model card as the Hub reads them: ``README.md`` through
    ``huggingface_hub.ModelCard.load`` and ``model_index_to_eval_results``, ``{metric_name: value}``, checked to
    agree with ``metadata_load``'s raw ``model-index``."""
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard import metadata_load
    from huggingface_hub.repocard_data import model_index_to_eval_results

    card = ModelCard.load(Path(run_dir) / "README.md")
    _, parsed = model_index_to_eval_results(metadata_load(Path(run_dir) / "README.md")["model-index"])
    assert [(r.metric_name, r.metric_value) for r in parsed] == [
        (r.metric_name, r.metric_value) for r in card.data.eval_results
    ]
    return {r.metric_name: r.metric_value for r in card.data.eval_results}
