"""The run every training command shares, and the checks it makes before anything loads.

A command is a :class:`~matrix_llm.modes.base.Mode`; :func:`run_mode` calls its steps in order:

    parse -> check -> preflight -> the objective (built once) -> load_data -> build -> train_and_finish -> report

Configuration problems (the dataclasses', the mode's :meth:`~matrix_llm.modes.base.Mode.check`,
:func:`preflight`'s: the model path, the resume target, an output folder holding a finished run, the
integrations named in ``report_to``, and the objective's own settings) are reported together, one line each,
with exit status 2, before any model or data loads; then the mode's data is loaded and its first rows decoded
(:meth:`~matrix_llm.modes.base.Mode.load_data`), and a data problem (a missing column, an unreadable file, a
dataset that cannot be found) is reported the same way, still before any model loads. :func:`train_and_finish` is the tail:

    resume target -> train (SIGTERM-safe) -> save -> final evaluation -> the mode's finish -> save state ->
    model card -> Hub push

**An unreadable image met during training** stops the run the same way: a checkpoint is saved and the command
exits with status 1 and a message naming the file (``skip_corrupt_images`` skips such images instead).

**SIGTERM** (what SLURM and preemptible clouds send before they kill a job): the current optimizer step is
finished, a checkpoint is saved, and the command exits with status 143 and a message naming the
``--resume_from_checkpoint`` flag that continues the run. All ranks stop at the same step (the flag is
reduced over processes).

What the run folder holds is named in one place, :class:`matrix_llm.hub.RunFolder`.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import shlex
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from . import hub
from .data.images import UnreadableImageError
from .parsing import ConfigError, looks_like_path, problem

__all__ = [
    "EXIT_PREEMPTED",
    "GracefulStop",
    "RunCard",
    "Stopped",
    "deepspeed_stage",
    "preflight",
    "resolve_checkpoint",
    "run_mode",
    "train_and_finish",
    "sharded_by",
    "write_report",
]

logger = logging.getLogger("matrix_llm.runner")

EXIT_PREEMPTED = 128 + signal.SIGTERM  # 143, the shell's status for a process ended by SIGTERM
_FINISHED_RUN_FILES = ("trainer_state.json", "train_results.json", "all_results.json")
_TRUE = ("true", "last", "latest", "yes", "1")
LOGGING_EXTRA = ("tensorboard", "wandb", "trackio")  # pyproject's `logging` extra
_INSTALL = {
    "tensorboard": "tensorboard",
    "wandb": "wandb",
    "mlflow": "mlflow",
    "comet_ml": "comet-ml",
    "trackio": "trackio",
    "swanlab": "swanlab",
    "clearml": "clearml",
    "neptune": "neptune",
    "dvclive": "dvclive",
    "codecarbon": "codecarbon",
}


# ----------------------------------------------------------------------------------------------------------
# before anything loads
# ----------------------------------------------------------------------------------------------------------


def resolve_checkpoint(value: str | None, output_dir: str | None) -> str | None:
    """``true``/``last`` -> the last ``checkpoint-*`` in ``output_dir`` (None if there is none); else the path.

    Raises:
        ValueError: a path that is not a directory.
    """
    if value is None:
        return None
    if str(value).lower() in _TRUE:
        from transformers.trainer_utils import get_last_checkpoint

        return get_last_checkpoint(output_dir) if output_dir and Path(output_dir).is_dir() else None
    if not Path(value).is_dir():
        raise ValueError(problem("resume_from_checkpoint", "a checkpoint directory or `true`", value))
    return str(value)


def _holds_finished_run(output_dir: Path) -> bool:
    return output_dir.is_dir() and any((output_dir / name).is_file() for name in _FINISHED_RUN_FILES)


def preflight(model_args: Any, training_args: Any) -> list[str]:
    """Problems visible from the configuration and the file system, before any model or data loads (an
    ``output_dir`` holding a finished run, or the checkpoints of one that did not finish, is refused unless the
    run resumes it or overwrites it)."""
    from transformers.integrations import get_available_reporting_integrations

    out = []
    name = getattr(model_args, "model_name_or_path", None) or ""
    if looks_like_path(name) and not Path(name).expanduser().is_dir():
        out.append(
            problem("model_name_or_path", "a Hub id or an existing local directory", name)
            + ": no such directory"
        )
    resume = training_args.resume_from_checkpoint
    output_dir = Path(training_args.output_dir)
    if resume is not None:
        try:
            if resolve_checkpoint(resume, training_args.output_dir) is None:
                out.append(
                    problem(
                        "resume_from_checkpoint", f"a checkpoint-* folder in output_dir={output_dir}", resume
                    )
                    + ": there is none; drop the flag to start from scratch"
                )
        except ValueError as e:
            out.append(f"{e}: no such directory")
    elif _holds_finished_run(output_dir) and not training_args.overwrite_output_dir:
        out.append(
            problem("output_dir", "a new or empty folder", str(output_dir))
            + ": it holds a finished run; pass --overwrite_output_dir to replace it, "
            "--resume_from_checkpoint true to continue it, or choose another output_dir"
        )
    elif (last := resolve_checkpoint("true", str(output_dir))) and not training_args.overwrite_output_dir:
        out.append(
            problem("output_dir", "a new or empty folder", str(output_dir))
            + f": it holds {Path(last).name} of a run that did not finish; pass --resume_from_checkpoint true to continue "
            "it, --overwrite_output_dir to start over, or choose another output_dir"
        )
    available = set(get_available_reporting_integrations())
    for integration in training_args.report_to or []:
        if integration not in available and integration in _INSTALL:
            extra = " (or `pip install 'matrix-llm[logging]'`)" if integration in LOGGING_EXTRA else ""
            out.append(
                problem("report_to", "installed integrations", integration)
                + f": {integration} is not installed; `pip install {_INSTALL[integration]}`{extra}, "
                "or drop it from report_to"
            )
    return out


def run_mode(mode: Any, argv: list[str] | None = None) -> int:
    """Run ``mode`` (a :class:`~matrix_llm.modes.base.Mode`) on ``argv``: its steps in order (module docstring).

    Returns the exit status: 0, 2 for configuration problems (every one listed on stderr), or
    :data:`EXIT_PREEMPTED` after a SIGTERM (a checkpoint was saved).
    """
    try:
        mode.parse(argv)
        problems = preflight(mode.model_args, mode.training_args)
        if problems:
            raise ConfigError(problems)
        try:
            objective = mode.objective()
        except ValueError as e:  # the losses check their own settings
            raise ConfigError([f"objective `{mode.training_args.objective}`: {e}"]) from None
        configured = set(vars(mode))
        logging.basicConfig(
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            level=logging.INFO if mode.training_args.should_log else logging.WARNING,
        )
        # data problems: missing columns, unreadable files, a split or a dataset that cannot be found
        try:
            mode.load_data()
        except (ValueError, OSError) as e:
            raise ConfigError([f"data: {e}"]) from None
    except ConfigError as err:
        sys.stderr.write(f"{mode.prog}: {err}\n")
        return 2
    training_args = mode.training_args
    try:
        from transformers import set_seed

        set_seed(training_args.seed)
        trainer = mode.build(objective)
        metrics = train_and_finish(trainer, mode)
        if trainer.is_world_process_zero():
            text = mode.report(metrics)
            if text:
                print(text)  # noqa: T201
        del trainer
    except Stopped as stop:
        sys.stderr.write(f"{mode.prog}: {stop}\n")
        return stop.status
    finally:
        # what build kept on the mode (datasets, callbacks that hold the trainer and so the model) goes before
        # the process group: a gloo run that still holds its model at teardown can abort (TESTING.md)
        for name in set(vars(mode)) - configured:
            delattr(mode, name)
        gc.collect()
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


# ----------------------------------------------------------------------------------------------------------
# SIGTERM
# ----------------------------------------------------------------------------------------------------------


class Stopped(RuntimeError):
    """Training stopped early after saving a checkpoint; the message says why and how to resume. ``status``: the
    command's exit status."""

    status = 1


class DataError(Stopped):
    """A training row that cannot be used, found while preparing the data after the model loaded (a conversation
    whose roles do not alternate, an empty turn); the message names the data and the row."""

    status = 2


class Preempted(Stopped):
    """Training stopped on SIGTERM after saving a checkpoint (the message says how to resume)."""

    status = EXIT_PREEMPTED


class GracefulStop(TrainerCallback):
    """A ``TrainerCallback`` that turns SIGTERM into "finish this step, save a checkpoint, stop".

    Use :meth:`installed` around ``trainer.train()``: it installs the signal handler (main thread only) and
    restores the previous one afterwards. ``requested`` tells whether training was stopped this way.
    """

    def __init__(self) -> None:
        self.requested = False
        self._signalled = False

    @contextmanager
    def installed(self) -> Iterator[GracefulStop]:
        def handler(signum, frame):
            self._signalled = True
            logger.warning("SIGTERM: finishing the current optimizer step, then saving a checkpoint")

        previous = signal.signal(signal.SIGTERM, handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _any_rank_signalled(self, args: Any) -> bool:
        from .distributed import world_size

        if world_size() == 1:
            return self._signalled
        import torch
        import torch.distributed as dist

        flag = torch.tensor([1.0 if self._signalled else 0.0], device=args.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)

    def on_step_end(self, args, state, control, **kwargs):
        if self._any_rank_signalled(args):
            self.requested = True
            control.should_save = True
            control.should_training_stop = True
        return control


# ----------------------------------------------------------------------------------------------------------
# the tail
# ----------------------------------------------------------------------------------------------------------


@dataclass
class RunCard:
    """What the model card names besides the objective: the base model, the data and extra lines; ``run_info``:
    what the command records in ``matrix_llm_run.json`` for later tools (e.g. the LM prompt template, which
    ``matrix-llm eval gsm8k`` uses as its default prompt); ``card_overrides``: fields of the objective's
    :class:`~matrix_llm.modes.ObjectiveCard` this run replaces (e.g. a text classifier's pipeline tag);
    ``adapter_dir``: with ``use_peft``, where the LoRA adapter is when the saved model has it merged (then the card
    is a plain ``transformers`` one); ``results``: the :class:`~matrix_llm.hub.CardResult` s the card's ``model-index``
    lists (those the run measured)."""

    base_model: str
    dataset: str
    eval_dataset: str | None = None
    details: tuple[str, ...] = ()
    run_info: dict[str, Any] = field(default_factory=dict)
    card_overrides: dict[str, Any] = field(default_factory=dict)
    # with use_peft: the adapter's sub-directory when the saved model is merged
    adapter_dir: str | None = None
    results: tuple[Any, ...] = ()  # the final evaluation numbers of the card's model-index (hub.CardResult)


def check_adapter(output_dir: str | Path) -> int:
    """Raise if the saved adapter is missing or empty (ZeRO-3 + LoRA pitfall, trl#4416); returns its numel."""
    from safetensors import safe_open

    path = Path(output_dir) / "adapter_model.safetensors"
    if not path.is_file():
        raise RuntimeError(f"no adapter_model.safetensors was written to {output_dir}")
    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
        numel = sum(math.prod(f.get_slice(key).get_shape()) for key in keys)
    if not keys or numel == 0:
        raise RuntimeError(
            f"the saved adapter {path} is empty ({len(keys)} tensors, {numel} values): under ZeRO-3 the LoRA "
            "weights were not gathered before saving"
        )
    return numel


def _checkpoint_step(checkpoint: str) -> int | None:
    state = Path(checkpoint) / "trainer_state.json"
    if state.is_file():
        return int(json.loads(state.read_text()).get("global_step", 0))
    return None


def write_run_info(output_dir: str | Path, objective: Any, extra: dict[str, Any] | None = None) -> Path:
    """``output_dir/matrix_llm_run.json``: the objective's name and plot panels (read by ``matrix-llm plot``),
    plus the command's ``extra`` entries."""
    path = hub.RunFolder(output_dir).run_info
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {
        "objective": getattr(objective, "name", type(objective).__name__),
        "plot_panels": [list(p) for p in getattr(objective, "plot_panels", ())],
        **(extra or {}),
    }
    path.write_text(json.dumps(info, indent=2) + "\n")
    return path


def train_and_finish(trainer: Any, mode: Any) -> dict[str, float]:
    """Resume target -> train -> save -> evaluate -> ``mode.finish`` -> state -> card -> push; returns the final
    metrics.

    ``mode.finish(trainer)`` (called on every process after the final evaluation) does the mode's own last
    work (e.g. saving the backbone alone, offline probes) and returns results: its numeric values join the
    returned metrics and the card, its ``details`` (a list of markdown lines) the card's details.
    ``mode.card()`` is the :class:`RunCard`; the card also lists every field of ``mode.data_args``.

    Raises:
        Preempted: SIGTERM arrived; a checkpoint was saved and the message says how to resume.
    """
    args, card = trainer.args, mode.card()
    checkpoint = resolve_checkpoint(args.resume_from_checkpoint, args.output_dir)
    if checkpoint is not None:
        logger.info("resuming from %s (step %s)", checkpoint, _checkpoint_step(checkpoint))
    if getattr(args, "matrix_probe_samples", 0):
        from matrix_llm.callbacks import MatrixMetricsCallback

        source = trainer.eval_dataset if trainer.eval_dataset is not None else trainer.train_dataset
        rows = source.select(range(min(len(source), args.matrix_probe_samples)))
        trainer.add_callback(MatrixMetricsCallback(rows, trainer=trainer))
    if trainer.is_world_process_zero():
        write_run_info(
            args.output_dir,
            trainer.objective,
            {
                **card.run_info,
                "world_size": trainer.accelerator.num_processes,
                "distributed_type": str(trainer.accelerator.distributed_type),
                "learning_rate_scaling": getattr(args, "learning_rate_record", None),
            },
        )
    stop = GracefulStop()
    trainer.add_callback(stop)
    with stop.installed():
        try:
            result = trainer.train(resume_from_checkpoint=checkpoint)
        except UnreadableImageError as e:  # met after the first rows were checked (Mode.load_data)
            step = trainer.state.global_step
            trainer._save_checkpoint(trainer.model_wrapped, trial=None)
            raise Stopped(
                f"{e} (after step {step}); a checkpoint was saved in {args.output_dir}. Fix or remove the file, or "
                "pass `--skip_corrupt_images true`; then resume with the same command plus "
                "`--resume_from_checkpoint true`."
            ) from None
    if stop.requested:
        trainer.accelerator.wait_for_everyone()
        raise Preempted(
            f"stopped by SIGTERM at step {trainer.state.global_step}; a checkpoint was saved in {args.output_dir}. "
            "Resume with the same command plus `--resume_from_checkpoint true`."
        )
    metrics = dict(result.metrics)
    skipped = getattr(trainer.data_collator, "skipped", None)
    if skipped:  # skip_corrupt_images
        logger.warning("%d unreadable images were skipped, the first: %s", len(skipped), skipped[0])
        metrics["skipped_images"] = len(skipped)
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_model(args.output_dir)
    if trainer.eval_dataset is not None:
        eval_metrics = trainer.evaluate()
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)
    extra = dict(mode.finish(trainer))
    details = list(extra.pop("details", []))
    extra = {k: v for k, v in extra.items() if isinstance(v, (int, float))}
    metrics.update(extra)
    trainer.save_state()

    if trainer.is_world_process_zero():
        if mode.model_args.use_peft:
            check_adapter(Path(args.output_dir) / (card.adapter_dir or ""))
        objective_card = replace(trainer.objective.card(args), **card.card_overrides)
        objective_card.details = list(objective_card.details) + list(card.details) + details
        hub.write_model_card(
            args.output_dir,
            objective_card=objective_card,
            base_model=card.base_model,
            dataset=card.dataset,
            eval_dataset=card.eval_dataset,
            training_args=args,
            data_args=mode.data_args,
            metrics={**hub.final_metrics(trainer.state.log_history), **extra},
            peft=mode.model_args.use_peft and card.adapter_dir is None,
            model_id=args.hub_model_id,
            command=mode.command,
            eval_results=card.results,
        )
        if args.push_to_hub:
            pending = getattr(trainer, "_finish_current_push", None)
            if callable(pending):
                pending()  # let the Trainer's checkpoint uploads finish first
            repo_id = getattr(trainer, "hub_model_id", None) or args.hub_model_id
            hub.push_to_hub(
                args.output_dir,
                repo_id=repo_id or Path(args.output_dir).absolute().name,
                token=args.hub_token,
                private=args.hub_private_repo,
                revision=args.hub_revision,
            )
    trainer.accelerator.wait_for_everyone()
    return metrics


def write_report(output_dir: str | Path, command: str, head: list[str], results: dict[str, Any]) -> str:
    """``metrics.png`` (:func:`matrix_llm.plotting.plot_run`; skipped with a warning when nothing was logged) and
    ``report.md``: the ``head`` lines, the figure and the command that reproduces the run (``results["argv"]``);
    returns the report's text."""
    from .plotting import plot_run

    output_dir = Path(output_dir)
    try:
        plot_run(output_dir)
    except ValueError as e:  # a run too short to have logged anything
        logger.warning("no metrics.png: %s", e)
    lines = [
        *head,
        "",
        "![metrics](metrics.png)",
        "",
        f"Reproduce: `{shlex.join(['matrix-llm', command, *results.get('argv', [])])}`",
    ]
    text = "\n".join(lines) + "\n"
    hub.RunFolder(output_dir).report.write_text(text)
    return text


def deepspeed_stage(training_args: Any) -> int | None:
    """The ZeRO stage a run is set up for (its ``deepspeed`` config, or ``accelerate launch``'s); ``None`` without
    DeepSpeed."""
    import os

    config = training_args.deepspeed
    if isinstance(config, str) and Path(config).is_file():
        config = json.loads(Path(config).read_text())
    if isinstance(config, dict):
        return int(config.get("zero_optimization", {}).get("stage", 0))
    stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE")
    return int(stage) if stage is not None and stage.isdigit() else None


def sharded_by(training_args: Any) -> str | None:
    """What shards the parameters across processes, for the combinations refused before any model loads:
    ``"DeepSpeed ZeRO-3"``, ``"FSDP"`` (``fsdp``, or an ``accelerate launch`` FSDP profile: ``ACCELERATE_USE_FSDP``)."""
    import os

    if deepspeed_stage(training_args) == 3:
        return "DeepSpeed ZeRO-3"
    if getattr(training_args, "fsdp", None) or os.environ.get("ACCELERATE_USE_FSDP", "").lower() in _TRUE:
        return "FSDP"
    return None
