"""GSM8K prompts: the training templates and the evaluation prompts (see :mod:`matrix_llm.data.gsm8k`)."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# --------------------------------------------------------------------------------------------------------------
# Training templates
# --------------------------------------------------------------------------------------------------------------

ALPACA_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
    "\n\n### Instruction:\n{instruction}\n\n### Response:"
)
QA_PROMPT = "Question: {question}\nAnswer:"
TEMPLATES = ("alpaca", "qa", "chat")

# What goes between the prompt and the answer. lm-eval joins "Answer:" and the target with its
# target_delimiter " "; MetaMath's evaluation prompt continues "### Response:" with " Let's think ...".
# A space-prefixed first word is also what a SentencePiece (Llama/Llemma) tokenizer produces for a
# separately tokenised completion ("▁Natalia"). MetaMath's train_math.py concatenates the response with no
# separator ("### Response:Natalia"); we deliberately do not, because no evaluation prompt reproduces that
# boundary. Chat templates end the generation prompt themselves (usually with a newline): no separator.
_COMPLETION_PREFIX = {"alpaca": " ", "qa": " ", "chat": ""}


def check_template(template: str) -> None:
    if template not in TEMPLATES:
        raise ValueError(f"template must be one of {TEMPLATES}; got {template!r}")


def _chat_prompt(question: str, tokenizer: Any) -> str:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "template='chat' needs a tokenizer with a chat template (tokenizer.chat_template is empty); "
            "pass tokenizer=..., use a chat/instruct model's tokenizer, or choose template='alpaca' or 'qa'"
        )
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )


def format_prompt(question: str, *, template: str, tokenizer: Any = None) -> str:
    """The training prompt for ``question``: ``alpaca`` (MetaMath), ``qa`` (lm-eval) or ``chat``.

    ``chat`` renders ``[{"role": "user", "content": question}]`` with the tokenizer's chat template and
    ``add_generation_prompt=True``; it needs ``tokenizer``.
    """
    check_template(template)
    if template == "alpaca":
        return ALPACA_PROMPT.format(instruction=question)
    if template == "qa":
        return QA_PROMPT.format(question=question)
    return _chat_prompt(question, tokenizer)


def format_completion(answer: str, *, template: str) -> str:
    """The completion text for ``answer`` under ``template`` (without EOS, which is added as a token id).

    The reference is kept intact, ``#### N`` line included; surrounding whitespace is stripped and the
    template's separator is prepended (``" "`` for ``alpaca`` and ``qa``, nothing for ``chat``). Raises on an
    empty answer.
    """
    check_template(template)
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError(f"empty completion: the answer must be a non-empty string; got {answer!r}")
    return _COMPLETION_PREFIX[template] + answer.strip()


# The row formats training data may use (those of TRL, axolotl and LLaMA-Factory besides GSM8K's own), by the
# columns that identify them, in the order they are recognised.
ROW_FORMATS = {
    "question_answer": ("question", "answer"),  # GSM8K (MetaMathQA's query/response are renamed on loading)
    "messages": ("messages",),  # conversational: every assistant turn is learned
    "sharegpt": ("conversations",),  # ShareGPT: from human / gpt / system, value; every gpt turn is learned
    "alpaca": ("instruction", "output"),  # Alpaca: instruction, optional input, output
    "prompt_completion": ("prompt", "completion"),  # TRL prompt-completion: texts, or message lists
    "text": ("text",),  # language modelling: every token is a target
}
# columns a format reads when present
OPTIONAL_COLUMNS = {"alpaca": ("input",)}
# Stanford Alpaca's prompt for a row with an input (ALPACA_PROMPT is the one without)
ALPACA_INPUT_PROMPT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n"
    "### Input:\n{input}\n\n### Response:"
)


def row_format(columns: Sequence[str] | Mapping[str, Any]) -> str | None:
    """The :data:`ROW_FORMATS` key whose columns ``columns`` holds (``None`` if none)."""
    present = set(columns)
    return next((name for name, cols in ROW_FORMATS.items() if set(cols) <= present), None)


def conversation(example: Mapping[str, Any]) -> tuple[list[Any], int] | None:
    """``(messages, first)`` of a conversational row (``messages``, ShareGPT ``conversations``, or TRL's
    conversational prompt-completion: message lists): its turns as chat messages and the index of the first turn
    whose assistant messages are learned (0; the completion's first for prompt-completion). ``None`` otherwise."""
    from ..conversations import sharegpt_messages

    kind = row_format(example)
    if kind == "messages":
        return example["messages"], 0
    if kind == "sharegpt":
        return sharegpt_messages(example["conversations"]), 0
    if kind == "prompt_completion" and isinstance(example["prompt"], list):
        if not isinstance(example["completion"], list):
            raise ValueError(
                "a conversational `prompt` (a message list) needs a conversational `completion` too"
            )
        return [*example["prompt"], *example["completion"]], len(example["prompt"])
    return None


def format_segments(
    example: Mapping[str, Any], *, template: str, tokenizer: Any = None
) -> list[tuple[str, bool]]:
    """``[(text, learned), ...]`` of one training row: a conversation rendered by the chat template with every
    assistant turn learned (:func:`matrix_llm.data.conversations.chat_segments`; for a conversational
    prompt-completion, those of the completion), else ``[(prompt, False), (completion, True)]`` of
    :func:`format_example`."""
    from ..conversations import chat_segments

    found = conversation(example)
    if found is not None:
        messages, first = found
        return chat_segments(messages, tokenizer, learn_from=first)
    prompt, completion = format_example(example, template=template, tokenizer=tokenizer)
    return [(prompt, False), (completion, True)]


def format_example(example: Mapping[str, Any], *, template: str, tokenizer: Any = None) -> tuple[str, str]:
    """``(prompt, completion)`` texts of one training row, whatever its format (:data:`ROW_FORMATS`):

    - ``question``/``answer`` (GSM8K): the training ``template`` (``alpaca``, ``qa`` or ``chat``);
    - conversations (``messages``, ShareGPT, conversational prompt-completion): the tokenizer's chat template; the
      completion is what the last assistant turn adds, the prompt everything before it (:func:`format_segments`
      gives every learned turn, which training uses);
    - ``instruction``/``input``/``output`` (Alpaca): the ``alpaca`` template is Stanford Alpaca's prompt (with its
      input section when ``input`` is not empty), ``qa`` / ``chat`` ask the instruction and the input as the
      question;
    - ``prompt``/``completion``: the two texts as they are (TRL's prompt-completion format);
    - ``text``: no prompt; the whole text is the completion (every token is learned).
    """
    kind = row_format(example)
    if kind == "question_answer":
        prompt = format_prompt(example["question"], template=template, tokenizer=tokenizer)
        return prompt, format_completion(example["answer"], template=template)
    if kind == "alpaca":
        instruction, extra = example["instruction"], example.get("input") or ""
        if not isinstance(instruction, str) or not isinstance(extra, str):
            raise ValueError(
                f"`instruction` and `input` must be strings; got {instruction!r:.60}, {extra!r:.60}"
            )
        if template == "alpaca":
            prompt = (
                ALPACA_INPUT_PROMPT.format(instruction=instruction, input=extra)
                if extra.strip()
                else ALPACA_PROMPT.format(instruction=instruction)
            )
        else:
            question = f"{instruction}\n\n{extra}" if extra.strip() else instruction
            prompt = format_prompt(question, template=template, tokenizer=tokenizer)
        return prompt, format_completion(example["output"], template=template)
    if conversation(example) is not None:
        segments = format_segments(example, template=template, tokenizer=tokenizer)
        last = max(i for i, (_, learned) in enumerate(segments) if learned)
        return "".join(t for t, _ in segments[:last]), "".join(t for t, _ in segments[last:])
    if kind == "prompt_completion":
        prompt, completion = example["prompt"], example["completion"]
        if not isinstance(prompt, str) or not isinstance(completion, str) or not completion.strip():
            raise ValueError(
                f"`prompt` and `completion` must be strings, the completion non-empty; got "
                f"{prompt!r:.60}, {completion!r:.60}"
            )
        return prompt, completion
    if kind == "text":
        if not isinstance(example["text"], str) or not example["text"].strip():
            raise ValueError(f"`text` must be a non-empty string; got {example['text']!r:.60}")
        return "", example["text"]
    raise ValueError(f"a row needs the fields of one of {ROW_FORMATS}; got {sorted(example)}")


# --------------------------------------------------------------------------------------------------------------
# Evaluation prompts
# --------------------------------------------------------------------------------------------------------------

# Wei et al. 2022 [1], as in lm-eval gsm8k-cot.yaml (v3.0) fewshot_config.samples (sampler: first_n).
COT8_EXEMPLARS: tuple[tuple[str, str], ...] = (
    (
        (
            "There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are "
            "done, there will be 21 trees. How many trees did the grove workers plant today?"
        ),
        (
            "There are 15 trees originally. Then there were 21 trees after some more were planted. So there must "
            "have been 21 - 15 = 6. The answer is 6."
        ),
    ),
    (
        "If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?",
        "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5.",
    ),
    (
        (
            "Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in "
            "total?"
        ),
        (
            "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. After "
            "eating 35, they had 74 - 35 = 39. The answer is 39."
        ),
    ),
    (
        (
            "Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many lollipops "
            "did Jason give to Denny?"
        ),
        (
            "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave Denny "
            "20 - 12 = 8. The answer is 8."
        ),
    ),
    (
        (
            "Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys does he "
            "have now?"
        ),
        (
            "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more toys. "
            "5 + 4 = 9. The answer is 9."
        ),
    ),
    (
        (
            "There were nine computers in the server room. Five more computers were installed each day, from "
            "monday to thursday. How many computers are now in the server room?"
        ),
        (
            "There were originally 9 computers. For each of 4 days, 5 more computers were added. So 5 * 4 = 20 "
            "computers were added. 9 + 20 is 29. The answer is 29."
        ),
    ),
    (
        (
            "Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. How many "
            "golf balls did he have at the end of wednesday?"
        ),
        (
            "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. After losing 2 "
            "more, he had 35 - 2 = 33 golf balls. The answer is 33."
        ),
    ),
    (
        "Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
        (
            "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has 23 - 15 "
            "dollars left. 23 - 15 is 8. The answer is 8."
        ),
    ),
)

# lm-eval: target_delimiter " " and fewshot_delimiter "\n\n" (the ConfigurableTask defaults).
_FEWSHOT_DELIMITER = "\n\n"
LM_EVAL_FEWSHOT_SEED = 1234  # lm-eval's default fewshot_random_seed

COLUMNS = frozenset({"question", "answer"})  # the fields of a GSM8K row


def _fewshot_pairs(examples: Sequence[Mapping[str, str]] | Any) -> list[tuple[str, str]]:
    pairs = []
    for ex in examples:
        if not isinstance(ex, Mapping) or not COLUMNS <= set(ex):
            raise ValueError(
                f"few-shot examples must be mappings with 'question' and 'answer'; got {ex!r:.120}"
            )
        pairs.append((ex["question"], ex["answer"]))
    return pairs


def _build_zero_shot_cot(question: str, fewshot_examples: Any = None, tokenizer: Any = None) -> str:
    return ALPACA_PROMPT.format(instruction=question) + " Let's think step by step."


def _build_fewshot5(question: str, fewshot_examples: Any = None, tokenizer: Any = None) -> str:
    if fewshot_examples is None:
        raise ValueError(
            "prompt='fewshot5' needs fewshot_examples: 5 GSM8K train rows with 'question' and 'answer', e.g. "
            "train.select(range(5)) (deterministic) or [train[i] for i in lm_eval_fewshot_indices(...)[doc]] "
            "(lm-eval's per-document random draw)"
        )
    shots = [QA_PROMPT.format(question=q) + " " + a for q, a in _fewshot_pairs(fewshot_examples)]
    return _FEWSHOT_DELIMITER.join([*shots, QA_PROMPT.format(question=question)])


def _build_cot8(question: str, fewshot_examples: Any = None, tokenizer: Any = None) -> str:
    pairs = COT8_EXEMPLARS if fewshot_examples is None else _fewshot_pairs(fewshot_examples)
    shots = [f"Q: {q}\nA: {a}" for q, a in pairs]
    return _FEWSHOT_DELIMITER.join([*shots, f"Q: {question}\nA:"])


def _training_template_builder(template: str) -> Callable[..., str]:
    def build(question: str, fewshot_examples: Any = None, tokenizer: Any = None) -> str:
        return format_prompt(question, template=template, tokenizer=tokenizer)

    return build


@dataclass(frozen=True)
class EvalPrompt:
    """An evaluation prompt: how to build it, where generation stops, which filter is its strict score.

    ``build(question, fewshot_examples=None, tokenizer=None) -> str``. ``stop`` are stop strings (the
    tokenizer's EOS token stops generation as well). ``strict_mode`` is the :func:`extract_answer` mode of the
    prompt's strict score; the flexible score always uses ``"flexible"``.
    """

    name: str
    build: Callable[..., str]
    stop: tuple[str, ...]
    strict_mode: str
    description: str = field(default="", compare=False)


_LM_EVAL_GSM8K_STOP = ("Question:", "</s>", "<|im_end|>")
_LM_EVAL_COT_STOP = ("Q:", "</s>", "<|im_end|>")
_METAMATH_STOP = (
    "Question:",
    "Question",
    "USER:",
    "USER",
    "ASSISTANT:",
    "ASSISTANT",
    "Instruction:",
    "Instruction",
    "Response:",
    "Response",
)

EVAL_PROMPTS: dict[str, EvalPrompt] = {
    p.name: p
    for p in (
        EvalPrompt(
            "zero_shot_cot",
            _build_zero_shot_cot,
            _METAMATH_STOP,
            "strict",
            'MetaMath eval_gsm8k.py: Alpaca prompt + " Let\'s think step by step."',
        ),
        EvalPrompt(
            "fewshot5",
            _build_fewshot5,
            _LM_EVAL_GSM8K_STOP,
            "strict",
            "lm-eval gsm8k v3: 5 x 'Question: q\\nAnswer: <full answer>' joined by blank lines",
        ),
        EvalPrompt(
            "cot8",
            _build_cot8,
            _LM_EVAL_COT_STOP,
            "cot",
            "lm-eval gsm8k_cot v3: the 8 Wei et al. 2022 exemplars, 'Q: q\\nA: ... The answer is N.'",
        ),
        EvalPrompt(
            "alpaca",
            _training_template_builder("alpaca"),
            _METAMATH_STOP,
            "strict",
            "zero-shot, exactly the 'alpaca' training prompt",
        ),
        EvalPrompt(
            "qa",
            _training_template_builder("qa"),
            _LM_EVAL_GSM8K_STOP,
            "strict",
            "zero-shot, exactly the 'qa' training prompt",
        ),
        EvalPrompt(
            "chat",
            _training_template_builder("chat"),
            ("<|im_end|>", "</s>"),
            "strict",
            "zero-shot, the tokenizer's chat template with a generation prompt",
        ),
    )
}


STOP_STRINGS: dict[str, tuple[str, ...]] = {name: p.stop for name, p in EVAL_PROMPTS.items()}


def get_eval_prompt(name: str) -> EvalPrompt:
    """The :class:`EvalPrompt` called ``name`` (one of ``EVAL_PROMPTS``)."""
    if name not in EVAL_PROMPTS:
        raise ValueError(f"prompt must be one of {tuple(EVAL_PROMPTS)}; got {name!r}")
    return EVAL_PROMPTS[name]


def build_eval_prompt(
    question: str,
    *,
    prompt: str = "zero_shot_cot",
    fewshot_examples: Sequence[Mapping[str, str]] | None = None,
    tokenizer: Any = None,
) -> str:
    """The evaluation prompt text for ``question`` (see ``EVAL_PROMPTS`` for the kinds).

    - ``zero_shot_cot``: MetaMath's: the Alpaca prompt + ``" Let's think step by step."``.
    - ``fewshot5``: lm-eval ``gsm8k``: each example as ``"Question: q\\nAnswer: <full answer>"``, joined and
      followed by the target ``"Question: q\\nAnswer:"`` with ``"\\n\\n"``. ``fewshot_examples`` is required.
      lm-eval draws the shots from the train split with its *default* (random) sampler, seeded with 1234 and
      advanced once per test document (``gsm8k.yaml`` has no ``fewshot_config``; only ``gsm8k_cot`` uses
      ``first_n``). Pass ``train.select(range(5))`` for a fixed prompt, or the rows given by
      :func:`lm_eval_fewshot_indices` to reproduce lm-eval's draw.
    - ``cot8``: lm-eval ``gsm8k_cot``: the 8 Wei et al. exemplars ``"Q: q\\nA: ... The answer is N."`` (or
      ``fewshot_examples`` with ``answer`` in that style), then ``"Q: q\\nA:"``.
    - ``alpaca`` / ``qa`` / ``chat``: zero-shot, identical to the training prompt (:func:`format_prompt`).
    """
    return get_eval_prompt(prompt).build(question, fewshot_examples=fewshot_examples, tokenizer=tokenizer)


def lm_eval_fewshot_indices(
    num_train: int, num_docs: int, *, k: int = 5, seed: int = LM_EVAL_FEWSHOT_SEED
) -> list[list[int]]:
    """The train-row indices lm-eval's default sampler uses as few-shot examples for each test document.

    lm-eval keeps one ``random.Random(seed)`` per task and calls ``rnd.sample(train_docs, k)`` once per test
    document, in document order; ``random.sample`` picks positions that depend only on the population size,
    so this reproduces a single-process, un-limited ``lm_eval --tasks gsm8k`` run of lm-eval 0.4.x, whose
    ``ContextSampler.sample`` is ``self.rnd.sample(self.docs, n)`` (data-parallel runs shard the documents
    first and draw differently; a later sampler rewrite may too: compare with ``--log_samples``).
    """
    rnd = random.Random(seed)
    return [rnd.sample(range(num_train), k) for _ in range(num_docs)]
