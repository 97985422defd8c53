"""Batched greedy generation for evaluation: the one code path behind ``matrix-llm eval`` and the callback.

:func:`generate` runs greedy decoding with a Hugging Face causal LM (plain or PEFT-wrapped):

- prompts are tokenised exactly as training tokenises them (:func:`matrix_llm.data.gsm8k.encode_prompt`: BOS
  prepended when the tokenizer defines one, never twice), sorted longest first, cut into batches
  of ``batch_size``, **left padded by hand** and generated with an attention mask, so transformers derives the
  position ids from the mask and every prompt sees the same positions as when it is generated alone;
- results come back in the order of ``prompts``;
- each sequence stops at EOS, at ``max_new_tokens`` (default 512: lm-eval's 256 truncates long chains of
  thought) or as soon as its generated text contains one of ``stop_strings``; the completion is then cut at the
  first stop string. The stop check (:class:`StopOnStrings`) looks at the *generated* tokens only, decoded with
  special tokens; transformers' own ``stop_strings=`` criterion also matches a stop string that straddles the
  prompt and the first generated token, which would end a completion that does not contain it;
- decoding is pure greedy: ``do_sample=False``, one beam, and the sampling / penalty settings a checkpoint's
  ``generation_config.json`` may carry (``repetition_penalty``, ``no_repeat_ngram_size``, ...) are reset to
  neutral values; only the model's EOS ids are kept. Batched and one-at-a-time generation give the same
  completions (tested in float32);
- a tqdm bar shows questions/s and generated tokens/s.

``synced_gpus=True`` is for generation inside a multi-process run with sharded weights (DeepSpeed ZeRO-3):
every rank then runs the same number of batches (ranks with fewer prompts run dummy batches) and the same number
of forward passes per batch (transformers' ``synced_gpus``), which ZeRO-3's parameter all-gathers need.

``backend="vllm"`` (:func:`generate_vllm`) runs the same prompts with vLLM when it is installed (greedy,
``temperature=0``, same stop strings and ``max_new_tokens``); it needs a model path, not a model object.

dtype: :func:`resolve_dtype` maps ``"auto"`` to bfloat16 on a CUDA GPU that supports it, float32 otherwise
(float32 on CPU and on GPUs without bfloat16, where float16 can overflow). It does *not* mean transformers'
``dtype="auto"`` (the checkpoint's stored dtype).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger("matrix_llm.modes.lm.generation")

__all__ = [
    "load_adapter",
    "GenerationOutput",
    "StopOnStrings",
    "generate",
    "generate_vllm",
    "greedy_generation_config",
    "resolve_dtype",
    "count_over_context",
    "truncate_at_stop",
]

DEFAULT_MAX_NEW_TOKENS = 512

# Settings that a checkpoint's generation_config.json may carry and that would change greedy decoding; reset to
# the neutral values transformers uses when nothing is set. (Fields whose neutral value is None, e.g.
# ``bad_words_ids``, cannot be reset this way: transformers v5 fills None fields from the model's config.)
_NEUTRAL = {
    "do_sample": False,
    "num_beams": 1,
    "num_return_sequences": 1,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "typical_p": 1.0,
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "min_new_tokens": 0,
    "renormalize_logits": False,
}


@dataclass
class GenerationOutput:
    """Completions in the order of the prompts, with per-item token counts and why each one stopped.

    ``finish_reasons[i]`` is ``"stop"`` (a stop string), ``"eos"`` or ``"length"`` (``max_new_tokens`` reached:
    the completion may be cut short). ``num_new_tokens[i]`` counts the generated tokens up to and including the
    one that ended the sequence. ``seconds`` is the wall time of the generation loop. ``over_context``: how many
    prompts leave fewer than ``max_new_tokens`` tokens of the model's context (:func:`count_over_context`).
    """

    completions: list[str]
    num_new_tokens: list[int] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0
    over_context: int | None = (
        None  # prompts whose tokens + max_new_tokens exceed the context (None: vLLM, not counted)
    )

    @property
    def questions_per_second(self) -> float:
        return len(self.completions) / self.seconds if self.seconds > 0 else float("nan")

    @property
    def tokens_per_second(self) -> float:
        return sum(self.num_new_tokens) / self.seconds if self.seconds > 0 else float("nan")


def truncate_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    """Cut ``text`` at the first occurrence of any stop string (lm-eval's ``until`` handling)."""
    cut = len(text)
    for stop in stop_strings:
        if stop:
            pos = text.find(stop)
            if pos != -1:
                cut = min(cut, pos)
    return text[:cut]


def load_adapter(model: Any, adapter: str | Path, tokenizer: Any = None) -> Any:
    """``PeftModel.from_pretrained(model, adapter)``, after resizing ``model``'s embeddings to the adapter's tokenizer
    (``tokenizer``, else the one saved in ``adapter``) when it has more tokens: an ``sft`` run that added a pad token
    saved those rows with the adapter (``matrix_llm.modes.lm.command.new_token_rows``), which attaching restores."""
    from peft import PeftModel

    if tokenizer is None and (Path(adapter) / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(adapter)
    if tokenizer is not None and len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    return PeftModel.from_pretrained(model, adapter)


def resolve_dtype(dtype: str | torch.dtype, device: torch.device | str | None = None) -> torch.dtype:
    """``"auto"`` -> bfloat16 on a CUDA device with bf16 support, else float32; names map to torch dtypes."""
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
        "float32": torch.float32,
        "fp32": torch.float32,
    }
    if dtype == "auto":
        device = torch.device(device) if device is not None else None
        on_cuda = device.type == "cuda" if device is not None else torch.cuda.is_available()
        if on_cuda and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in names:
        raise ValueError(f"dtype must be 'auto' or one of {sorted(names)}; got {dtype!r}")
    return names[dtype]


def _eos_ids(model, tokenizer) -> list[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return []
    return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]


def greedy_generation_config(model, tokenizer, *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS):
    """A ``GenerationConfig`` for pure greedy decoding that keeps only the model's EOS ids.

    transformers v5 fills every unset field from ``model.generation_config``, so the fields that change greedy
    decoding are set explicitly to neutral values (see ``_NEUTRAL``).
    """
    from transformers import GenerationConfig

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1; got {max_new_tokens}")
    eos = _eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else 0)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, eos_token_id=eos or None, pad_token_id=pad, use_cache=True
    )
    for key, value in _NEUTRAL.items():
        setattr(config, key, value)
    return config


class StopOnStrings:
    """Per-sequence stopping criterion: stop once the generated text (special tokens kept) holds a stop string.

    Only the tokens after ``prompt_length`` are looked at. Each step decodes a window of the last tokens of
    every running sequence; a hit is confirmed on the full decoded completion, so the criterion never stops a
    sequence whose completion does not contain a stop string. ``stopped_at[i]`` is the number of generated
    tokens at which sequence ``i`` stopped (``None`` if it did not).
    """

    def __init__(self, tokenizer, stop_strings: Sequence[str], prompt_length: int, batch_size: int):
        self.tokenizer = tokenizer
        self.stop_strings = [s for s in stop_strings if s]
        self.prompt_length = prompt_length
        self.window = max((len(s) for s in self.stop_strings), default=0) + 8
        self.stopped_at: list[int | None] = [None] * batch_size

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def __call__(self, input_ids: torch.LongTensor, scores=None, **kwargs) -> torch.BoolTensor:
        generated = input_ids[:, self.prompt_length :]
        n = generated.shape[1]
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if not self.stop_strings or n == 0:
            return done
        tails = generated[:, -self.window :].tolist()
        for i, tail in enumerate(tails):
            if self.stopped_at[i] is not None:
                done[i] = True
                continue
            if any(s in self._decode(tail) for s in self.stop_strings):
                full = self._decode(generated[i].tolist())
                if any(s in full for s in self.stop_strings):
                    self.stopped_at[i] = n
                    done[i] = True
        return done


def count_over_context(model, lengths: Sequence[int], max_new_tokens: int) -> int:
    """How many prompts of ``lengths`` tokens leave fewer than ``max_new_tokens`` tokens of the model's context
    (``config.max_position_embeddings``; 0 when the config has none); a warning says how many, once per call."""
    context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if not isinstance(context, int):
        return 0
    over = [n for n in lengths if n + max_new_tokens > context]
    if over:
        logger.warning(
            "%d of %d prompts (the longest: %d tokens) leave fewer than max_new_tokens=%d of the model's %d-token "
            "context: their answers can be cut short or degrade past it; use a shorter prompt (fewer shots) or "
            "fewer max_new_tokens",
            len(over),
            len(lengths),
            max(over),
            max_new_tokens,
            context,
        )
    return len(over)


def _model_device(model) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


def _dist_max(value: int, device: torch.device) -> int:
    import torch.distributed as dist

    from matrix_llm.distributed import world_size

    if world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.long, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def _finish(gen_ids: list[int], stopped_at: int | None, eos: set[int]) -> tuple[int, str]:
    """(number of generated tokens that count, finish reason) for one sequence."""
    n, reason = len(gen_ids), "length"
    if stopped_at is not None and stopped_at <= n:
        n, reason = stopped_at, "stop"
    eos_at = next((j + 1 for j, t in enumerate(gen_ids) if t in eos), None)
    if eos_at is not None and eos_at <= n:
        n, reason = eos_at, "eos"
    return n, reason


@torch.inference_mode()
def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = 8,
    stop_strings: Sequence[str] = (),
    synced_gpus: bool = False,
    autocast_dtype: torch.dtype | None = None,
    progress: bool = True,
    desc: str = "generate",
) -> GenerationOutput:
    """Greedy completions of ``prompts``, batched and left padded, returned in the order of ``prompts``.

    Args:
        model: a causal LM (``PreTrainedModel`` or a PEFT model wrapping one); used as it is (device, dtype).
        tokenizer: its tokenizer; without a pad token, the first EOS id pads (the attention mask hides it).
        max_new_tokens: generation budget per prompt (default 512).
        batch_size: prompts per ``generate`` call.
        stop_strings: the completion ends at the first of these (see :class:`StopOnStrings`).
        synced_gpus: run the same number of batches and forward passes on every rank (DeepSpeed ZeRO-3).
        autocast_dtype: run under ``torch.autocast`` with this dtype (e.g. bf16 when training with fp32 master
            weights); ``None`` uses the model's own dtype.
        progress: show a tqdm bar (questions/s and tokens/s).
    """
    from tqdm.auto import tqdm
    from transformers import StoppingCriteriaList

    from matrix_llm.data.gsm8k import encode_prompt

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    prompts = list(prompts)
    device = _model_device(model)
    config = greedy_generation_config(model, tokenizer, max_new_tokens=max_new_tokens)
    eos = set(_eos_ids(model, tokenizer))
    pad_id = config.pad_token_id
    stop_strings = list(stop_strings)

    encoded = [encode_prompt(p, tokenizer) for p in prompts]
    if any(len(ids) == 0 for ids in encoded):
        bad = next(i for i, ids in enumerate(encoded) if len(ids) == 0)
        raise ValueError(f"prompt {bad} encodes to no tokens; every prompt must contain text")
    over_context = count_over_context(model, [len(ids) for ids in encoded], max_new_tokens)
    order = sorted(range(len(prompts)), key=lambda i: (-len(encoded[i]), i))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    n_batches = _dist_max(len(batches), device) if synced_gpus else len(batches)
    dummy = encoded[order[0]] if encoded else [pad_id if not eos else min(eos)]

    completions: list[str] = [""] * len(prompts)
    num_tokens: list[int] = [0] * len(prompts)
    reasons: list[str] = [""] * len(prompts)
    bar = tqdm(total=len(prompts), desc=desc, unit="q", disable=not progress, dynamic_ncols=True)
    start = time.perf_counter()
    try:
        for b in range(n_batches):
            idx = batches[b] if b < len(batches) else []
            rows = [encoded[i] for i in idx] or [dummy]
            width = max(len(r) for r in rows)
            input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, ids in enumerate(rows):
                input_ids[r, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                attention_mask[r, width - len(ids) :] = 1
            criterion = StopOnStrings(tokenizer, stop_strings, width, len(rows))
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                out = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention_mask.to(device),
                    generation_config=config,
                    stopping_criteria=StoppingCriteriaList([criterion]),
                    synced_gpus=synced_gpus,
                )
            generated = out[:, width:].tolist()
            for r, i in enumerate(idx):
                n, reason = _finish(generated[r], criterion.stopped_at[r], eos)
                text = tokenizer.decode(generated[r][:n], skip_special_tokens=True)
                completions[i] = truncate_at_stop(text, stop_strings)
                num_tokens[i], reasons[i] = n, reason
            if idx:
                elapsed = max(time.perf_counter() - start, 1e-9)
                bar.update(len(idx))
                bar.set_postfix(q_s=f"{bar.n / elapsed:.2f}", tok_s=f"{sum(num_tokens) / elapsed:.1f}")
    finally:
        bar.close()
    return GenerationOutput(completions, num_tokens, reasons, time.perf_counter() - start, over_context)


def generate_vllm(
    model_path: str,
    prompts: Sequence[str],
    *,
    adapter: str | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    stop_strings: Sequence[str] = (),
    dtype: str = "auto",
    seed: int = 0,
) -> GenerationOutput:
    """Greedy completions with vLLM (``pip install vllm``): same prompts, stop strings and token budget.

    vLLM adds special tokens as the tokenizer does by default and cuts the stop string from the output itself;
    the completions are cut again with :func:`truncate_at_stop` so both backends share the final step.
    """
    try:
        from vllm import LLM, SamplingParams
    except ImportError as err:
        raise ImportError(
            "backend='vllm' needs vLLM, which is not installed: `pip install vllm` (GPU only), "
            "or use backend='hf' (the default)"
        ) from err

    torch_dtype = resolve_dtype(dtype)
    llm_kwargs = {"model": model_path, "dtype": str(torch_dtype).removeprefix("torch."), "seed": seed}
    lora_request = None
    if adapter is not None:
        from vllm.lora.request import LoRARequest

        llm_kwargs["enable_lora"] = True
        lora_request = LoRARequest("adapter", 1, adapter)
    llm = LLM(**llm_kwargs)
    params = SamplingParams(
        temperature=0.0, top_p=1.0, max_tokens=max_new_tokens, stop=list(stop_strings) or None
    )
    start = time.perf_counter()
    outputs = llm.generate(list(prompts), params, lora_request=lora_request)
    seconds = time.perf_counter() - start
    completions, num_tokens, reasons = [], [], []
    for out in outputs:
        choice = out.outputs[0]
        completions.append(truncate_at_stop(choice.text, stop_strings))
        num_tokens.append(len(choice.token_ids))
        reason = choice.finish_reason
        reasons.append(
            "length" if reason == "length" else ("stop" if choice.stop_reason is not None else "eos")
        )
    return GenerationOutput(completions, num_tokens, reasons, seconds)
