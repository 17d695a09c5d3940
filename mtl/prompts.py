"""Prompt templates for the generative tasks: `chat`, `summarize`, `answer`, `translate`, `code`.

Every task is turned into OpenAI-style chat messages first, and the messages are rendered to a prompt
string by the model's own chat template (instruct models answer far better inside the format they were
tuned on). The message builders are pure functions so they can be tested without a tokenizer;
`render_chatml` is the fallback for tokenizers that ship no chat template.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

GENERATIVE_TASKS = ("chat", "summarize", "answer", "translate", "code")
CHAT_ROLES = ("system", "user", "assistant")

SUMMARIZE_SYSTEM = "You are a careful assistant that writes short, faithful summaries."
SUMMARIZE_USER = "Summarize the following text in one or two sentences.\n\nText:\n{text}"
ANSWER_SYSTEM = "You are a helpful assistant that answers questions briefly and accurately."
ANSWER_WITH_CONTEXT_USER = (
    "Answer the question using only the context. If the context does not contain the answer, say so.\n\n"
    "Context:\n{context}\n\nQuestion: {question}"
)
ANSWER_USER = "Question: {question}"
TRANSLATE_SYSTEM = "You are a translator. Reply with the translation only, nothing else."
TRANSLATE_USER = "Translate the following text from {source} to {target}.\n\nText:\n{text}"
TRANSLATE_USER_ANY = "Translate the following text to {target}.\n\nText:\n{text}"
CODE_SYSTEM = "You are a programming assistant. Reply with working code and at most a short explanation."
CODE_USER = "Write {language} code for this task:\n{instruction}"
CODE_USER_ANY = "Write code for this task:\n{instruction}"


class PromptError(ValueError):
    """Inputs that a task template cannot use; the message names the task and the bad field."""


def _text_field(task: str, inputs: Any, field: str, *, required: bool = True) -> str | None:
    value = inputs.get(field) if isinstance(inputs, Mapping) else None
    if value is None:
        if required:
            raise PromptError(f"task {task!r} needs a string field {field!r}")
        return None
    if not isinstance(value, str):
        raise PromptError(f"task {task!r}: field {field!r} must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise PromptError(f"task {task!r}: field {field!r} is empty")
    return value


def validate_messages(messages: Any) -> list[dict[str, str]]:
    """OpenAI-style messages -> a clean list of {"role", "content"} dicts, or PromptError.

    `content` may be a string or a list of OpenAI content parts; only text parts are supported.
    """
    if not isinstance(messages, Sequence) or isinstance(messages, str | bytes) or not messages:
        raise PromptError("chat needs a non-empty list of messages")
    clean: list[dict[str, str]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise PromptError(f"messages[{i}] must be an object with 'role' and 'content'")
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise PromptError(f"messages[{i}].role must be one of {list(CHAT_ROLES)}, got {role!r}")
        content = message.get("content")
        if isinstance(content, list):  # OpenAI content parts: [{"type": "text", "text": ...}, ...]
            texts = []
            for j, part in enumerate(content):
                if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise PromptError(f"messages[{i}].content[{j}]: only text parts are supported")
                texts.append(part["text"])
            content = "".join(texts)
        if not isinstance(content, str):
            raise PromptError(f"messages[{i}].content must be a string, got {type(content).__name__}")
        clean.append({"role": role, "content": content})
    if clean[-1]["role"] == "assistant":
        raise PromptError("the last message must be from the user or the system, not the assistant")
    return clean


def build_messages(task: str, inputs: Any) -> list[dict[str, str]]:
    """The chat messages for one task. `inputs`:

    - summarize: `{"text": str}` or the text itself
    - answer: `{"question": str, "context": str | None}` or the question itself
    - translate: `{"text": str, "target": str, "source": str | None}` (languages by name)
    - code: `{"instruction": str, "language": str | None}` or the instruction itself
    - chat: OpenAI-style messages (a list) or `{"messages": [...]}`
    """
    if task == "summarize":
        text = inputs if isinstance(inputs, str) else _text_field(task, inputs, "text")
        if not text.strip():
            raise PromptError("task 'summarize': field 'text' is empty")
        return [
            {"role": "system", "content": SUMMARIZE_SYSTEM},
            {"role": "user", "content": SUMMARIZE_USER.format(text=text.strip())},
        ]
    if task == "answer":
        if isinstance(inputs, str):
            question, context = inputs, None
        else:
            question = _text_field(task, inputs, "question")
            context = _text_field(task, inputs, "context", required=False)
        if not question.strip():
            raise PromptError("task 'answer': field 'question' is empty")
        if context and context.strip():
            user = ANSWER_WITH_CONTEXT_USER.format(context=context.strip(), question=question.strip())
        else:
            user = ANSWER_USER.format(question=question.strip())
        return [{"role": "system", "content": ANSWER_SYSTEM}, {"role": "user", "content": user}]
    if task == "translate":
        text = _text_field(task, inputs, "text")
        target = _text_field(task, inputs, "target")
        source = _text_field(task, inputs, "source", required=False)
        user = (TRANSLATE_USER.format(source=source.strip(), target=target.strip(), text=text.strip())
                if source and source.strip() else TRANSLATE_USER_ANY.format(target=target.strip(), text=text.strip()))
        return [{"role": "system", "content": TRANSLATE_SYSTEM}, {"role": "user", "content": user}]
    if task == "code":
        instruction = inputs if isinstance(inputs, str) else _text_field(task, inputs, "instruction")
        if not instruction.strip():
            raise PromptError("task 'code': field 'instruction' is empty")
        language = None if isinstance(inputs, str) else _text_field(task, inputs, "language", required=False)
        user = (CODE_USER.format(language=language.strip(), instruction=instruction.strip())
                if language and language.strip() else CODE_USER_ANY.format(instruction=instruction.strip()))
        return [{"role": "system", "content": CODE_SYSTEM}, {"role": "user", "content": user}]
    if task == "chat":
        messages = inputs.get("messages") if isinstance(inputs, Mapping) else inputs
        return validate_messages(messages)
    raise PromptError(f"unknown generative task {task!r}; known: {list(GENERATIVE_TASKS)}")


def render_chatml(messages: list[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
    """ChatML rendering, the format SmolLM2 and many small instruct models use; used only when a
    tokenizer carries no chat template of its own."""
    parts = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
    if add_generation_prompt:
        parts.append("<|im_start|>assistant\n")
    return "".join(parts)
