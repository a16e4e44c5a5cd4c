"""Training-file formats: detection, streaming readers, normalisation to the internal example form, the report.

Every corpus file under tests/data/files/ is validated here as the worker does it (streamed, in chunks of a
few bytes as well as in one), and its report and normalised lines are checked."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from services.files.formats import Limits, Report, csv_safe_cell, encode, formula_like_paths, validate_stream
from services.files.formats.detect import detect, unreadable
from services.files.formats.examples import ExampleError, layout_of, normalise
from services.files.formats.preview import shortened
from services.files.formats.readers import JsonDocumentError, JsonElement, JsonElements, TextChunker, csv_records

CORPUS = Path(__file__).resolve().parents[1] / "data" / "files"


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def validate(data: bytes, filename: str = "upload", *, fmt: str | None = None, limits: Limits | None = None,
             chunk: int = 64 * 1024) -> tuple[Report, list[dict[str, Any]]]:
    """The report of `data`, and the normalised examples written (parsed back)."""
    written: list[bytes] = []

    async def sink(data: bytes) -> None:  # whole lines, one or more a call
        assert data.endswith(b"\n")
        written.extend(data.splitlines())

    report = asyncio.run(validate_stream(_chunks(data, chunk), filename=filename, requested_format=fmt,
                                         limits=limits or Limits(), sink=sink))
    return report, [json.loads(line) for line in written]


def codes(report: Report) -> list[tuple[int, str]]:
    return [(e["line"], e["code"]) for e in report.errors]


# ------------------------------------------------------------------------------------------------ the corpus

GOOD = {  # file: (format, layout, examples)
    "chat.jsonl": ("jsonl", "chat", 12),
    "prompt_completion.jsonl": ("jsonl", "prompt_completion", 12),
    "preference.jsonl": ("jsonl", "preference", 12),
    "text.jsonl": ("jsonl", "text", 12),
    "alpaca.json": ("json", "alpaca", 12),
    "qa_wrapped.json": ("json", "question_answer", 12),
    "alpaca.csv": ("csv", "alpaca", 12),
    "qa.csv": ("csv", "question_answer", 12),
    "story.txt": ("txt", "plain_text", 15),
}
BAD = {  # file: (format, errors as (line, code))
    "bad_invalid_json.jsonl": ("jsonl", [(2, "invalid_json")]),
    "bad_unknown_role.jsonl": ("jsonl", [(2, "unknown_role")]),
    "bad_missing_assistant.jsonl": ("jsonl", [(2, "missing_assistant")]),
    "bad_empty_content.jsonl": ("jsonl", [(2, "empty_content")]),
    "bad_unknown_key.jsonl": ("jsonl", [(2, "unknown_key")]),
    "bad_wrong_type.jsonl": ("jsonl", [(2, "wrong_type"), (3, "wrong_type")]),
    "bad_line_too_long.jsonl": ("jsonl", [(2, "line_too_long")]),  # with a 1,000-byte limit, below
    "bad_invalid_utf8.jsonl": ("jsonl", [(2, "invalid_utf8")]),
    "bad_mixed_formats.jsonl": ("jsonl", [(2, "mixed_formats")]),
    "bad_unknown_format.jsonl": ("jsonl", [(1, "unknown_format")]),
    "bad_invalid_order.jsonl": ("jsonl", [(1, "invalid_order")]),
    "bad_missing_key.jsonl": ("jsonl", [(1, "missing_key")]),
    "bad_nesting_too_deep.jsonl": ("jsonl", [(2, "nesting_too_deep")]),
    "bad_nesting_too_deep.json": ("json", [(1, "nesting_too_deep")]),
    "bad_json_no_data.json": ("json", [(17, "unknown_format")]),
    "bad_ragged_row.csv": ("csv", [(3, "ragged_row"), (4, "ragged_row")]),
    "bad_invalid_csv.csv": ("csv", [(3, "invalid_csv")]),
    "bad_binary_content.bin": (None, [(1, "binary_content")]),
    "bad_empty_file.jsonl": (None, [(1, "empty_file")]),
}


def _corpus_limits(name: str) -> Limits:
    return Limits(max_line_bytes=1000) if "line_too_long" in name else Limits()


def test_the_corpus_has_a_file_for_every_format_and_error_code() -> None:
    assert {f for f, _, _ in GOOD.values()} == {"jsonl", "json", "csv", "txt"}
    assert {code for _, errors in BAD.values() for _, code in errors} >= {
        "invalid_json", "unknown_role", "missing_assistant", "empty_content", "unknown_key", "wrong_type",
        "line_too_long", "invalid_utf8", "mixed_formats", "ragged_row", "nesting_too_deep", "binary_content",
        "empty_file"}
    assert sorted(p.name for p in CORPUS.iterdir()) == sorted([*GOOD, *BAD])


@pytest.mark.parametrize("name", list(GOOD))
def test_good_files_are_processed_and_normalised(name: str) -> None:
    data = (CORPUS / name).read_bytes()
    report, examples = validate(data, name)
    file_format, layout, count = GOOD[name]

    assert report.ok and report.status_details() is None, report.errors
    assert (report.body["format"], report.body["layout"], report.examples) == (file_format, layout, count)
    assert len(examples) == count and report.body["statistics"]["examples"] == count
    assert {e["type"] for e in examples} == {report.body["example_type"]}
    # Streamed a few bytes at a time, the outcome is the same.
    streamed, streamed_examples = validate(data, name, chunk=7)
    assert streamed.body == report.body and streamed_examples == examples


@pytest.mark.parametrize("name", list(BAD))
def test_bad_files_are_refused_with_a_code_per_line(name: str) -> None:
    file_format, expected = BAD[name]
    for chunk in (3, 64 * 1024):
        report, _ = validate((CORPUS / name).read_bytes(), name, limits=_corpus_limits(name), chunk=chunk)
        assert not report.ok
        assert report.body["format"] == file_format
        assert codes(report) == expected
        assert report.status_details().startswith("Invalid file format. ")  # type: ignore[union-attr]


def test_chat_lines_keep_weights_tool_calls_and_join_text_parts() -> None:
    _, examples = validate((CORPUS / "chat.jsonl").read_bytes())

    assert examples[0] == {"type": "chat", "messages": [
        {"role": "system", "content": "You are a terse calculator."},
        {"role": "user", "content": "What is 1 + 1?"}, {"role": "assistant", "content": "2."}]}
    assert [m.get("weight") for m in examples[1]["messages"]] == [None, 0, None, 1]
    assert examples[2]["messages"][0] == {"role": "user", "content": "What is 3 + 3?"}
    call, tool = examples[3]["messages"][1:3]
    assert call["content"] == "" and call["tool_calls"][0]["function"]["name"] == "add"
    assert tool == {"role": "tool", "content": "8", "tool_call_id": "c1"}


def test_other_layouts_become_chat_preference_or_text() -> None:
    alpaca = validate((CORPUS / "alpaca.json").read_bytes())[1]
    assert alpaca[0]["messages"] == [{"role": "user", "content": "Translate to French.\n\nGood morning"},
                                     {"role": "assistant", "content": "Bonjour"}]
    assert alpaca[1]["messages"][0]["content"] == "Name a primary colour."  # an empty input adds nothing
    assert validate((CORPUS / "prompt_completion.jsonl").read_bytes())[1][0] == {"type": "chat", "messages": [
        {"role": "user", "content": "Capital of country #0?"}, {"role": "assistant", "content": " City 0."}]}
    assert validate((CORPUS / "qa_wrapped.json").read_bytes())[1][1]["messages"][1]["content"] == "1 legs."
    assert validate((CORPUS / "preference.jsonl").read_bytes())[1][0] == {
        "type": "preference", "messages": [{"role": "user", "content": "Greet person 0."}],
        "chosen": {"role": "assistant", "content": "Hello, person 0!"},
        "rejected": {"role": "assistant", "content": "Go away."}}
    assert validate((CORPUS / "text.jsonl").read_bytes())[1][0]["type"] == "text"


def test_csv_reads_a_bom_crlf_quoted_newlines_and_doubled_quotes() -> None:
    report, examples = validate((CORPUS / "alpaca.csv").read_bytes(), "alpaca.csv", chunk=5)

    assert report.ok
    assert examples[1]["messages"][1]["content"] == "Line one.\nLine two."
    assert examples[2]["messages"][0]["content"] == 'Quote this.\n\nHe said "hi".'
    assert examples[3]["messages"][1]["content"] == "=1+2"  # carried verbatim; the preview flags it


def test_csv_columns_outside_the_layout_are_ignored_with_a_warning() -> None:
    report, examples = validate((CORPUS / "qa.csv").read_bytes(), "qa.csv")

    assert [w["code"] for w in report.body["warnings"]] == ["ignored_keys"]
    assert "'source'" in report.body["warnings"][0]["message"]
    assert examples[0] == {"type": "chat", "messages": [{"role": "user", "content": "Q0?"},
                                                       {"role": "assistant", "content": "A0."}]}


def test_csv_chat_rows_hold_their_messages_as_json() -> None:
    messages = json.dumps([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])
    data = ("messages\n" + '"' + messages.replace('"', '""') + '"\n"[oops"\n').encode()
    report, examples = validate(data, "chat.csv")

    assert examples == [{"type": "chat", "messages": json.loads(messages)}]
    assert codes(report) == [(3, "invalid_json")] and report.errors[0]["row"] == 2


def test_plain_text_becomes_chunks_on_paragraph_boundaries() -> None:
    text = (CORPUS / "story.txt").read_text()
    report, examples = validate(text.encode(), "story.txt")

    assert all(len(e["text"]) <= 2000 for e in examples)
    assert examples[0]["text"].startswith("Chapter 1.\nSentence 0 of chapter 1")
    # Nothing lost or added but whitespace.
    assert " ".join(e["text"] for e in examples).split() == text.split()
    assert report.body["statistics"]["chars_per_example"]["max"] <= 2000


def test_text_chunker_prefers_paragraph_then_line_then_space_boundaries() -> None:
    chunker = TextChunker(50)
    lines = ["Title", "", "First paragraph line one.", "line two of it.", "", "Second paragraph is here.",
             "A very long line that goes on and on and on and on past the fifty character target.", "", "tail"]
    chunks = [c for i, line in enumerate(lines, 1) for c in chunker.add(i, line)] + chunker.close()

    assert chunks == [(1, "Title\n\nFirst paragraph line one.\nline two of it."),
                      (6, "Second paragraph is here.\nA very long line that"),
                      (7, "goes on and on and on and on past the fifty"),
                      (7, "character target.\n\ntail")]


# ----------------------------------------------------------------------------------------------- detection

@pytest.mark.parametrize(("head", "filename", "expected"), [
    (b'{"messages": []}\n{"messages": []}\n', "x", "jsonl"),
    (b'{"text": "one object, one line"}', "x.json", "jsonl"),
    (b'{"data": [{"text": "a"}]}', "x", "json"),
    (b'{\n  "data": [\n', "x", "json"),
    (b"{not json\n" + b'{"text": "b"}\n', "x", "jsonl"),
    (b'  [{"prompt": "a", "completion": "b"}]', "x", "json"),
    (b"prompt,completion\na,b\n", "x", "csv"),
    (b"Instruction, Input ,output\n", "x", "csv"),
    (b"anything,at,all\n", "data.CSV", "csv"),
    (b"text\nhello\n", "x", "txt"),  # one column that reads like a word: text, unless the name says CSV
    (b"Once upon a time, a fox.\n", "x", "txt"),
])
def test_the_format_is_detected_from_the_content(head: bytes, filename: str, expected: str) -> None:
    assert detect(head, filename, complete=True) == expected


def test_a_first_line_longer_than_the_sniffed_head_is_still_told_apart() -> None:
    long_text = "x" * 100_000
    jsonl = json.dumps({"messages": [{"role": "user", "content": long_text},
                                     {"role": "assistant", "content": "ok"}]}).encode() + b"\n"
    minified = json.dumps({"object": "list", "data": [{"text": long_text}]}).encode()

    assert validate(jsonl * 2)[0].body["format"] == "jsonl"
    assert validate(minified)[0].body["format"] == "json"


def test_an_explicit_format_overrides_detection() -> None:
    data = b"prompt,completion\na,b\n"
    assert validate(data, "x.csv")[0].body["layout"] == "prompt_completion"
    report, examples = validate(data, "x.csv", fmt="txt")
    assert (report.body["format"], report.body["format_source"]) == ("txt", "requested")
    assert examples == [{"type": "text", "text": "prompt,completion\na,b"}]


@pytest.mark.parametrize(("head", "code"), [
    (b"\x00\x01\x02\x03 binary", "binary_content"), (b"PK\x03\x04 zip", "binary_content"),
    (b"%PDF-1.7", "binary_content"), (b"\xff\xfe{\x00", "invalid_utf8"), (b"\xef\xbb\xbf \n\t", "empty_file"),
])
def test_binary_utf16_and_empty_files_are_refused_up_front(head: bytes, code: str) -> None:
    problem = unreadable(head)
    assert problem is not None and problem.code == code


# ---------------------------------------------------------------------------------------- records, one by one

@pytest.mark.parametrize(("record", "code"), [
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 2}]},
     "wrong_type"),
    ({"messages": [{"role": "user", "content": "q", "weight": 1}, {"role": "assistant", "content": "a"}]},
     "wrong_type"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0}]},
     "missing_assistant"),
    ({"messages": []}, "empty_content"),
    ({"messages": "hello"}, "wrong_type"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
                   {"role": "assistant", "content": "a"}]}, "wrong_type"),
    ({"instruction": "", "output": "x"}, "empty_content"),
    ({"instruction": "do", "output": 3}, "wrong_type"),
    ({"question": "q?"}, "missing_key"),
    ({"input": {"messages": [{"role": "user", "content": "q"}]}, "preferred_output": [],
      "non_preferred_output": [{"role": "assistant", "content": "b"}]}, "wrong_type"),
    ({"input": {"messages": [{"role": "user", "content": "q"}]},
      "preferred_output": [{"role": "user", "content": "a"}],
      "non_preferred_output": [{"role": "assistant", "content": "b"}]}, "unknown_role"),
])
def test_each_record_problem_has_its_code(record: dict[str, Any], code: str) -> None:
    layout = layout_of(record)
    assert layout is not None
    with pytest.raises(ExampleError) as caught:
        normalise(record, layout)
    assert caught.value.code == code


def test_prompt_chosen_rejected_is_a_preference_pair_with_an_optional_system_message() -> None:
    record = {"system": "Be kind.", "prompt": "Greet me.", "chosen": "Hello!", "rejected": "No."}
    layout = layout_of(record)
    assert layout is not None and layout.name == "prompt_chosen_rejected"
    assert normalise(record, layout) == {
        "type": "preference", "messages": [{"role": "system", "content": "Be kind."},
                                           {"role": "user", "content": "Greet me."}],
        "chosen": {"role": "assistant", "content": "Hello!"}, "rejected": {"role": "assistant", "content": "No."}}


def test_a_plain_openai_chat_line_is_passed_through_as_its_own_bytes_with_the_same_meaning() -> None:
    line = '{"messages": [{"role": "user", "content": "caf\u00e9 \\"q\\""}, {"role": "assistant", "content": "a"}]}'
    _, examples = validate(line.encode() + b"\n")
    assert examples == [{"type": "chat", **json.loads(line)}]


def test_a_pretty_printed_chat_array_still_gives_one_line_per_example() -> None:
    records = [json.loads(_chat_line(i)) for i in range(3)]
    report, examples = validate(json.dumps(records, indent=2).encode(), chunk=10)  # `validate` checks the lines

    assert report.ok and examples == [{"type": "chat", **r} for r in records]


def test_nan_and_lone_surrogates_never_reach_the_normalised_file() -> None:
    nan = b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": NaN}]}'
    surrogate = b'{"text": "bad \\ud800 escape"}'
    assert codes(validate(nan + b"\n")[0]) == [(1, "invalid_json")]
    report, examples = validate(b'{"text": "fine"}\n' + surrogate + b"\n")
    assert codes(report) == [(2, "invalid_utf8")] and examples == [{"type": "text", "text": "fine"}]


def test_deep_nesting_is_refused_without_recursion_anywhere() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    for data in (b'{"messages": ' + deep + b"}\n", b"[" + deep + b"]", b'{"data": [' + deep + b"]}"):
        report, _ = validate(data, chunk=4096)
        assert [code for _, code in codes(report)] == ["nesting_too_deep"]


# ------------------------------------------------------------------------------------------ streaming pieces

def _scan(data: bytes, chunk: int, max_bytes: int = 1000) -> list[JsonElement | JsonDocumentError]:
    scanner = JsonElements(max_bytes, 64)
    items = [item for i in range(0, len(data), chunk) for item in scanner.feed(data[i:i + chunk])]
    return items + scanner.close()


def test_json_elements_are_split_across_any_chunk_boundary() -> None:
    document = json.dumps({"object": "list", "skip": [{"a": "]}"}], "data": [
        {"text": 'brackets ]}[{ and "quotes" \\ inside'}, "a string", 12.5, None, [1, [2]]], "after": {}},
        indent=1).encode()
    expected = [json.loads(d) for d in (b'{"text": "brackets ]}[{ and \\"quotes\\" \\\\ inside"}', b'"a string"',
                                        b"12.5", b"null", b"[1, [2]]")]
    for chunk in (1, 2, 3, 7, 1000):
        items = _scan(document, chunk)
        assert all(isinstance(i, JsonElement) for i in items)
        assert [json.loads(i.data) for i in items if isinstance(i, JsonElement) and i.data] == expected
        assert [i.index for i in items if isinstance(i, JsonElement)] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(("document", "code"), [
    (b"[1, 2] trailing", "invalid_json"), (b"[1, 2", "invalid_json"), (b'{"data": 3}', "wrong_type"),
    (b'{"other": [1]}', "unknown_format"), (b"[1 2]", "invalid_json"), (b'["open string', "invalid_json"),
])
def test_a_broken_json_document_is_one_error_with_its_line(document: bytes, code: str) -> None:
    items = _scan(document, 3)
    assert isinstance(items[-1], JsonDocumentError) and items[-1].code == code
    assert sum(isinstance(i, JsonDocumentError) for i in items) == 1


def test_an_oversized_json_element_is_dropped_not_held() -> None:
    big = json.dumps({"text": "x" * 10_000}).encode()
    items = _scan(b"[" + big + b", {\"text\": \"ok\"}]", 100, max_bytes=1000)
    assert [(i.index, i.problem) for i in items if isinstance(i, JsonElement)] == [(1, "line_too_long"), (2, None)]
    report, _ = validate(b"[" + big + b', {"text": "ok"}]', limits=Limits(max_line_bytes=1000))
    assert codes(report) == [(1, "line_too_long")] and report.errors[0]["example"] == 1


def test_csv_records_span_quoted_newlines_and_oversized_rows_are_dropped() -> None:
    data = b'a,b\r\n"x\ny",z\r\n' + b'"' + b"w" * 300 + b'",v\nlast,row'

    async def collect(chunk: int) -> list[tuple[int, bytes | None]]:
        return [r async for r in csv_records(_chunks(data, chunk), 100)]

    for chunk in (1, 4, 1000):
        assert asyncio.run(collect(chunk)) == [(1, b"a,b\r"), (2, b'"x\ny",z\r'), (4, None), (5, b"last,row")]


# ------------------------------------------------------------------------------------------------- the report

def _chat_line(i: int, answer: str = "a") -> bytes:
    return json.dumps({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": f"q{i}"},
                                    {"role": "assistant", "content": answer}]}).encode() + b"\n"


def test_errors_past_the_first_hundred_are_counted_not_listed() -> None:
    report, _ = validate(_chat_line(0) + b"{nope\n" * 250)

    assert len(report.errors) == 100 and report.body["error_counts"] == {"invalid_json": 250}
    assert report.body["errors_not_listed"] == 150
    assert report.status_details() == ("Invalid file format. Line 2 is not valid JSON (Expecting property name "
                                       "enclosed in double quotes at column 2). (249 more error(s))")


def test_once_an_error_is_found_no_more_normalised_lines_are_written() -> None:
    # Lines are handed on a chunk at a time (after the head that detection reads): with a chunk a line long, the
    # lines before the error are written (but the one that shares the error's chunk), none from it on.
    good = b"".join(_chat_line(i) for i in range(1000, 2000))  # lines of one length, past the head
    written = validate(good + b"{nope\n" + _chat_line(9999), chunk=len(_chat_line(1000)))[1]
    assert len(written) >= 999 and written == validate(good)[1][:len(written)]


def test_warnings_for_few_long_and_duplicate_examples() -> None:
    data = _chat_line(1) + _chat_line(1) + _chat_line(2, answer="x" * 100) + _chat_line(1)
    report, examples = validate(data, limits=Limits(context_tokens=20))

    assert report.ok and len(examples) == 4  # warnings never refuse a file
    warnings = {w["code"]: w for w in report.body["warnings"]}
    assert set(warnings) == {"too_few_examples", "truncation_likely", "duplicate_examples"}
    assert (warnings["duplicate_examples"]["count"], warnings["duplicate_examples"]["lines"]) == (2, [2, 4])
    assert warnings["truncation_likely"]["lines"] == [3]


def test_statistics_count_examples_tokens_lengths_and_roles() -> None:
    stats = validate(_chat_line(1) + _chat_line(22, answer="abcdefgh"))[0].body["statistics"]

    # chars: "s" + "q1" + "a" = 4 -> 1 token; "s" + "q22" + "abcdefgh" = 12 -> 3 tokens
    assert stats["examples"] == 2 and stats["estimated_tokens"] == 4
    assert stats["chars_per_example"] == {"min": 4, "mean": 8.0, "max": 12}
    assert stats["tokens_per_example"] == {"min": 1, "mean": 2.0, "max": 3}
    assert stats["role_counts"] == {"system": 2, "user": 2, "assistant": 2}
    assert stats["example_types"] == {"chat": 2}


def test_the_summary_kept_on_the_record() -> None:
    report, _ = validate((CORPUS / "qa.csv").read_bytes(), "qa.csv")
    assert report.summary() == {"format": "csv", "layout": "question_answer", "example_type": "chat",
                                "error_count": 0, "warning_count": 1, "estimated_tokens": 24}


# ------------------------------------------------------------------------------------------------ previews

def test_formula_like_cells_are_flagged_and_escaped_for_csv() -> None:
    example = {"type": "chat", "messages": [{"role": "user", "content": "=HYPERLINK(\"x\")"},
                                            {"role": "assistant", "content": "-1"}, {"role": "user", "content": "ok"}]}
    assert formula_like_paths(example) == ["messages[0].content", "messages[1].content"]
    assert [csv_safe_cell(v) for v in ("=1+2", "+1", "@x", "\tA", "fine", "")] == [
        "'=1+2", "'+1", "'@x", "'\tA", "fine", ""]


def test_previews_cut_long_texts_and_say_where() -> None:
    example = {"type": "text", "text": "y" * 50}
    assert shortened(example, 10) == ({"type": "text", "text": "y" * 10}, ["text"])
    assert encode(example) == b'{"type":"text","text":"' + b"y" * 50 + b'"}'
