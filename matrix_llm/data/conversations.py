"""Conversations as training rows: ShareGPT's ``conversations`` mapped to messages, the checks a conversation must
pass, and the texts of a conversation with the ones to learn marked (every assistant turn).

- :func:`sharegpt_messages`: ``[{"from": "human" | "gpt" | "system", "value": ...}]`` (ShareGPT, as axolotl and
  LLaMA-Factory read it) -> ``[{"role": "user" | "assistant" | "system", "content": ...}]``.
- :func:`check_conversation`: an optional system message first, then user and assistant turns alternating, the
  last one the assistant's, no empty assistant turn; a ``ValueError`` says which turn breaks it.
- :func:`chat_segments`: the conversation rendered with the tokenizer's chat template, cut into ``(text,
  learned)`` pieces whose concatenation is the whole rendering; the pieces each assistant turn adds are learned
  (its content and whatever the template writes after it, e.g. an end-of-turn token), the rest (system prompt,
  user turns, the template's role headers) is not. The cut is found by rendering every prefix of the
  conversation: the rendering up to user turn ``i`` with the generation prompt is where assistant turn ``i``
  starts, the rendering up to assistant turn ``i`` is where it ends (as TRL's prompt-completion split does for
  one turn). This needs no ``{% generation %}`` markers, and gives the same cut as they would on templates that
  have them; a template whose rendering of a prefix is not a prefix of the whole (one that rewrites earlier
  turns, e.g. drops a reasoning trace) is refused with that reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["SHAREGPT_ROLES", "chat_segments", "check_conversation", "sharegpt_messages"]

# ShareGPT's speaker names (`from`) -> chat roles
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
}


def sharegpt_messages(conversations: Any) -> list[dict[str, str]]:
    """ShareGPT turns (``from`` / ``value``) as chat messages (``role`` / ``content``)."""
    if not isinstance(conversations, list) or not all(isinstance(t, Mapping) for t in conversations):
        raise ValueError(
            f"`conversations` must be a list of {{from, value}} dicts (ShareGPT); got {conversations!r:.80}"
        )
    out = []
    for i, turn in enumerate(conversations):
        speaker = turn.get("from")
        if speaker not in SHAREGPT_ROLES:
            raise ValueError(f"turn {i}: `from` must be one of {sorted(SHAREGPT_ROLES)}; got {speaker!r}")
        out.append({"role": SHAREGPT_ROLES[speaker], "content": turn.get("value")})
    return out


def check_conversation(messages: Any) -> list[dict[str, Any]]:
    """``messages`` if it is a trainable conversation (module docstring), else a ``ValueError`` naming the turn."""
    if not isinstance(messages, list) or not messages or not all(isinstance(m, Mapping) for m in messages):
        raise ValueError(
            f"a conversation must be a non-empty list of {{role, content}} dicts; got {messages!r:.80}"
        )
    turns = messages[1:] if messages[0].get("role") == "system" else messages
    for i, message in enumerate(turns, start=len(messages) - len(turns)):
        expected = "user" if (i - (len(messages) - len(turns))) % 2 == 0 else "assistant"
        if message.get("role") != expected:
            raise ValueError(
                f"message {i}: roles must alternate user / assistant after an optional system message; "
                f"expected {expected!r}, got {message.get('role')!r}"
            )
        content = message.get("content")
        if not isinstance(content, str) or (expected == "assistant" and not content.strip()):
            raise ValueError(f"message {i} ({expected}): empty or not a string: {content!r:.60}")
    if not turns or turns[-1].get("role") != "assistant":
        raise ValueError("the last message must be the assistant's (a turn to learn)")
    return list(messages)


def chat_segments(
    messages: Sequence[Mapping[str, Any]], tokenizer: Any, *, learn_from: int = 0
) -> list[tuple[str, bool]]:
    """``[(text, learned), ...]`` of a conversation (module docstring): every assistant turn from message
    ``learn_from`` on learned (TRL's conversational prompt-completion learns its completion's only)."""
    messages = check_conversation(list(messages))
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "conversation rows need a tokenizer with a chat template (tokenizer.chat_template is empty)"
        )

    def render(upto: int, generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(
            list(messages[:upto]), tokenize=False, add_generation_prompt=generation_prompt
        )

    full = render(len(messages), False)
    segments: list[tuple[str, bool]] = []
    done = 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or i < learn_from:
            continue
        start, end = render(i, True), render(i + 1, False)
        if not (full.startswith(start) and full.startswith(end) and len(end) > len(start) >= done):
            raise ValueError(
                f"message {i}: the chat template renders the conversation so that it does not start with the "
                "rendering of its first turns; the assistant turns cannot be cut out"
            )
        segments += [(full[done : len(start)], False), (full[len(start) : len(end)], True)]
        done = len(end)
    if done < len(full):
        segments.append((full[done:], False))
    return [(text, learned) for text, learned in segments if text]
