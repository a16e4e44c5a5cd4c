"""One training record, whatever its layout, checked and turned into the internal example the trainer reads.

The internal form, one JSON object per line of the normalised file:
- `{"type": "chat", "messages": [{"role", "content", "weight"?, "name"?, "tool_calls"?, "tool_call_id"?}...]}`
- `{"type": "text", "text": "..."}` (continued pre-training: loss on every token)
- `{"type": "preference", "messages": [...], "chosen": {"role": "assistant", "content"}, "rejected": {...}}`
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

ROLES = ("system", "user", "assistant", "tool")
MESSAGE_KEYS = frozenset({"role", "content", "name", "weight", "tool_calls", "tool_call_id", "function_call"})
_PASSED_THROUGH = ("name", "tool_calls", "tool_call_id", "function_call")


class ExampleError(Exception):
    """A record that cannot become a training example; `code` is the report's machine code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Layout:
    name: str
    triggers: frozenset[str]  # any of these keys selects the layout
    required: tuple[str, ...]
    optional: frozenset[str]

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(self.required) | self.optional


def _layout(name: str, triggers: Collection[str], required: tuple[str, ...], optional: Collection[str] = ()) -> Layout:
    return Layout(name, frozenset(triggers), required, frozenset(optional))


# In order of precedence: a record is read by the first layout one of whose trigger keys it has.
LAYOUTS = (
    _layout("chat", {"messages"}, ("messages",), {"tools", "parallel_tool_calls", "functions"}),
    _layout("preference", {"preferred_output", "non_preferred_output"},
            ("input", "preferred_output", "non_preferred_output")),
    _layout("prompt_chosen_rejected", {"chosen", "rejected"}, ("prompt", "chosen", "rejected"), {"system"}),
    _layout("alpaca", {"instruction", "output"}, ("instruction", "output"), {"input", "system"}),
    _layout("prompt_completion", {"prompt", "completion"}, ("prompt", "completion"), {"system"}),
    _layout("question_answer", {"question", "answer"}, ("question", "answer"), {"system"}),
    _layout("text", {"text"}, ("text",)),
)
LAYOUTS_BY_NAME = {layout.name: layout for layout in LAYOUTS}
KNOWN_KEYS = frozenset().union(*(layout.keys for layout in LAYOUTS))
LAYOUT_HELP = ("'messages' (chat), 'prompt'/'completion', 'instruction'/'input'/'output', 'question'/'answer', "
               "'input'/'preferred_output'/'non_preferred_output', 'prompt'/'chosen'/'rejected', or 'text'")


def layout_of(keys: Collection[str]) -> Layout | None:
    present = set(keys)
    return next((layout for layout in LAYOUTS if layout.triggers & present), None)


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _string(record: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    value = record.get(key)
    if value is None and not required:
        return ""
    if key not in record:
        raise ExampleError("missing_key", f"'{key}' is missing.")
    if not isinstance(value, str):
        raise ExampleError("wrong_type", f"'{key}' must be a string, not {_type_name(value)}.")
    if required and not value.strip():
        raise ExampleError("empty_content", f"'{key}' is empty.")
    return value


def _text_content(value: Any, where: str) -> str:
    """Message content as text: a string, null, or a list of text parts (OpenAI's content-part form)."""
    if value is None or isinstance(value, str):
        return value or ""
    if isinstance(value, list):
        texts = []
        for j, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else _type_name(part)
                raise ExampleError("wrong_type", f"{where}.content[{j}] is {_short(kind)}; only text content "
                                                 "is supported.")
            texts.append(part["text"])
        return "".join(texts)
    raise ExampleError("wrong_type", f"{where}.content must be a string, not {_type_name(value)}.")


def _message(message: Any, where: str, i: int | None = None) -> dict[str, Any]:
    """A checked message; `where` (with index `i`) names it in errors, formatted only when there is one."""
    if not isinstance(message, dict):
        raise ExampleError("wrong_type", f"{_at(where, i)} must be an object, not {_type_name(message)}.")
    role = message.get("role")
    content = message.get("content")
    if role in ROLES and message.keys() <= {"role", "content"} and type(content) is str and content.strip():
        return message  # the common case, checked at once and kept as it is
    where = _at(where, i)
    if role not in ROLES:
        raise ExampleError("unknown_role", f"{where} has unknown role {_short(role)}; expected one of "
                                           f"{', '.join(ROLES)}.")
    unknown = message.keys() - MESSAGE_KEYS
    if unknown:
        names = ", ".join(_short(k, 30) for k in sorted(unknown)[:5])
        raise ExampleError("unknown_key", f"{where} has unknown key(s): {names}.")
    content = _text_content(content, where)
    calls_tool = role == "assistant" and bool(message.get("tool_calls") or message.get("function_call"))
    if not content.strip() and not calls_tool:
        raise ExampleError("empty_content", f"{where} ({role}) has no text content.")
    out: dict[str, Any] = {"role": role, "content": content}
    if "weight" in message:
        weight = message["weight"]
        if isinstance(weight, bool) or weight not in (0, 1):
            raise ExampleError("wrong_type", f"{where}.weight must be 0 or 1, not {_short(weight)}.")
        if role != "assistant":
            raise ExampleError("wrong_type", f"{where}.weight is only allowed on assistant messages.")
        out["weight"] = int(weight)
    if "name" in message and not isinstance(message["name"], str):
        raise ExampleError("wrong_type", f"{where}.name must be a string.")
    out.update({k: message[k] for k in _PASSED_THROUGH if message.get(k) is not None})
    return out


def _at(where: str, i: int | None) -> str:
    return where if i is None else f"{where}[{i}]"


def _messages(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise ExampleError("wrong_type", f"'{where}' must be a list of messages, not {_type_name(value)}.")
    if not value:
        raise ExampleError("empty_content", f"'{where}' is empty.")
    return [_message(m, where, i) for i, m in enumerate(value)]


def _chat(record: Mapping[str, Any]) -> dict[str, Any]:
    messages = _messages(record.get("messages"), "messages")
    if messages[0]["role"] == "assistant":
        raise ExampleError("invalid_order", "The conversation starts with an assistant message.")
    if not any(m["role"] == "assistant" and m.get("weight", 1) == 1 for m in messages):
        raise ExampleError("missing_assistant", "The example has no assistant message to learn from "
                                                "(none, or all have weight 0).")
    example: dict[str, Any] = {"type": "chat", "messages": messages}
    if record.get("tools") is not None:
        example["tools"] = record["tools"]
    return example


def _single_reply(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, list) or len(value) != 1:
        raise ExampleError("wrong_type", f"'{key}' must be a list holding exactly one assistant message.")
    message = _message(value[0], f"{key}[0]")
    if message["role"] != "assistant":
        raise ExampleError("unknown_role", f"{key}[0] must be an assistant message, not {message['role']}.")
    return {"role": "assistant", "content": message["content"]}


def _preference(record: Mapping[str, Any]) -> dict[str, Any]:
    prompt = record.get("input")
    if not isinstance(prompt, dict):
        raise ExampleError("wrong_type", f"'input' must be an object with 'messages', not {_type_name(prompt)}.")
    return {"type": "preference", "messages": _messages(prompt.get("messages"), "input.messages"),
            "chosen": _single_reply(record.get("preferred_output"), "preferred_output"),
            "rejected": _single_reply(record.get("non_preferred_output"), "non_preferred_output")}


def _with_system(record: Mapping[str, Any], *messages: dict[str, Any]) -> list[dict[str, Any]]:
    system = _string(record, "system", required=False)
    return ([{"role": "system", "content": system}] if system.strip() else []) + list(messages)


def _exchange(record: Mapping[str, Any], question: str, answer: str) -> dict[str, Any]:
    return {"type": "chat", "messages": _with_system(record, {"role": "user", "content": question},
                                                     {"role": "assistant", "content": answer})}


def _alpaca(record: Mapping[str, Any]) -> dict[str, Any]:
    instruction = _string(record, "instruction")
    extra = _string(record, "input", required=False)
    prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return _exchange(record, prompt, _string(record, "output"))


def _prompt_chosen_rejected(record: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "preference",
            "messages": _with_system(record, {"role": "user", "content": _string(record, "prompt")}),
            "chosen": {"role": "assistant", "content": _string(record, "chosen")},
            "rejected": {"role": "assistant", "content": _string(record, "rejected")}}


_NORMALISERS = {
    "chat": _chat,
    "preference": _preference,
    "prompt_chosen_rejected": _prompt_chosen_rejected,
    "alpaca": _alpaca,
    "prompt_completion": lambda r: _exchange(r, _string(r, "prompt"), _string(r, "completion")),
    "question_answer": lambda r: _exchange(r, _string(r, "question"), _string(r, "answer")),
    "text": lambda r: {"type": "text", "text": _string(r, "text")},
}


def normalise(record: Mapping[str, Any], layout: Layout) -> dict[str, Any]:
    """The internal example for `record` read as `layout`, or an ExampleError saying what is wrong."""
    example: dict[str, Any] = _NORMALISERS[layout.name](record)
    return example


_PLAIN_MESSAGE_KEYS = frozenset({"role", "content"})
_ROLE_SET = frozenset(ROLES)


def plain_chat(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """The example of a chat record whose messages need no change (roles known, text content, nothing else:
    most lines of most files), found in one pass; None for any other record, which `normalise` then reads
    (and explains). The same example `normalise` gives, holding the record's own messages."""
    messages = record.get("messages")
    if type(messages) is not list or not messages:
        return None
    has_reply = False
    for message in messages:
        if type(message) is not dict or message.keys() != _PLAIN_MESSAGE_KEYS:
            return None
        role, content = message["role"], message["content"]
        if type(role) is not str or role not in _ROLE_SET or type(content) is not str or not content.strip():
            return None
        has_reply = has_reply or role == "assistant"
    if not has_reply or messages[0]["role"] == "assistant":
        return None
    return {"type": "chat", "messages": messages}


def is_verbatim_chat(record: Mapping[str, Any], example: Mapping[str, Any]) -> bool:
    """Whether `example` is `record` with only `"type": "chat"` added: an OpenAI chat line whose messages
    needed no change (so its own bytes can stand for it in the normalised file)."""
    return (example["type"] == "chat" and record.keys() == {"messages"}
            and all(a is b for a, b in zip(example["messages"], record["messages"], strict=True)))


def text_chars(example: Mapping[str, Any]) -> int:
    """Characters of text the example carries (for the token estimate)."""
    if example["type"] == "text":
        return len(example["text"])
    chars = sum(len(m["content"]) for m in example["messages"])
    if example["type"] == "preference":
        chars += max(len(example["chosen"]["content"]), len(example["rejected"]["content"]))
    return chars
