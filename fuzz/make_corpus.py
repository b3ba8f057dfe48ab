#!/usr/bin/env python3
"""Writes the seed corpus of fuzz/frame_decoder_fuzzer.cpp: well-formed worker conversations
(hello, then results and exceptions for tasks 1, 2, ...) and a few classic near-misses."""
import os
import struct
import sys

MAGIC, HELLO, TASK, RESULT, EXCEPTION, SKIPPED, PROGRESS = 0x70704C31, 1, 2, 3, 4, 7, 8
BUILD_ID = b"0123456789abcdef"


def frame(kind, task_id, payload, magic=MAGIC, flags=0):
    return struct.pack("<IHHQQ", magic, kind, flags, task_id, len(payload)) + payload


def text(b):
    return struct.pack("<Q", len(b)) + b


def hello(version=2, build=BUILD_ID, pid=1234):
    return frame(HELLO, 0, struct.pack("<I", version) + text(build) + struct.pack("<i", pid))


def envelope(type_name, what, code=0, category=b""):
    return text(type_name) + text(what) + struct.pack("<i", code) + text(category)


seeds = {
    "hello_only": hello(),
    "string_result": hello() + frame(RESULT, 1, text(b"hello, world")),
    "bytes_result": hello() + frame(RESULT, 1, text(bytes(range(64)))),
    "map_result": hello() + frame(RESULT, 2, struct.pack("<Q", 1) + text(b"k") +
                                  struct.pack("<Q", 2) + struct.pack("<dd", 1.5, 2.5)),
    "variant_result": hello() + frame(RESULT, 3, b"\x01" + text(b"opt") +
                                      struct.pack("<i", 2) + text(b"tri") +
                                      struct.pack("<QHH", 2, 7, 9)),
    "nested_result": hello() + frame(RESULT, 4, struct.pack("<QQ", 1, 1) + text(b"s") +
                                     struct.pack("<QH", 1, 3)),
    "integer_result": hello() + frame(RESULT, 5, struct.pack("<q", -5)),
    "invalid_argument": hello() + frame(EXCEPTION, 1,
                                        envelope(b"St16invalid_argument", b"bad input")),
    "system_error": hello() + frame(EXCEPTION, 1, envelope(b"NSt3_V212system_errorE",
                                                           b"open: No such file", 2, b"generic")),
    "unknown_exception": hello() + frame(EXCEPTION, 1,
                                         envelope(b"N2ns10my_problemE", b"custom")),
    "bad_alloc": hello() + frame(EXCEPTION, 1, envelope(b"St9bad_alloc", b"std::bad_alloc")),
    "output_unread": hello() + frame(RESULT, 1, text(b"printed"), flags=1),
    "unknown_flags": hello() + frame(RESULT, 1, text(b"x"), flags=6),
    "skipped_asked": hello() + frame(RESULT, 1, text(b"a")) + frame(RESULT, 2, text(b"b")) +
    frame(SKIPPED, 3, b""),
    "skipped_unasked": hello() + frame(SKIPPED, 1, b""),
    "three_tasks": hello() + frame(RESULT, 1, text(b"a")) + frame(RESULT, 2, struct.pack("<Q", 0)) +
    frame(EXCEPTION, 3, envelope(b"St13runtime_error", b"boom")),
    "huge_length": hello() + frame(RESULT, 1, struct.pack("<Q", 1 << 40) + b"abc"),
    "wrong_task": hello() + frame(RESULT, 9, text(b"x")),
    "bad_magic": frame(HELLO, 0, b"", magic=0xDEADBEEF),
    "wrong_build": hello(build=b"other"),
    "progress": hello() + frame(PROGRESS, 1, struct.pack("<QQ", 3, 10) + text(b"3 of 10")) +
    frame(PROGRESS, 1, struct.pack("<QQ", 10, 10) + text(b"")) + frame(RESULT, 1, text(b"done")),
    "progress_short": hello() + frame(PROGRESS, 1, struct.pack("<QQ", 3, 10) + struct.pack("<Q", 900)),
    "progress_other_task": hello() + frame(PROGRESS, 5, struct.pack("<QQ", 1, 2) + text(b"")),
    "truncated": hello() + frame(RESULT, 1, text(b"cut short"))[:-4],
}

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus",
                                                          "frame_decoder")
os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
