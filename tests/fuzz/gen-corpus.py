#!/usr/bin/env python3
"""Writes the seed corpus for the proto fuzz target into tests/fuzz/corpus/proto/.

Each file is a byte stream as a peer would send it (4-byte big-endian length + msgpack payload,
repeated), except the payload-* files, which are bare payloads.  The fuzz body uses every input
both ways, so either kind seeds both paths.  msgpack is written by hand (no packages needed);
Raw() embeds bytes verbatim for encodings a normal packer would never produce.

Run from anywhere: python3 tests/fuzz/gen-corpus.py  (files are rewritten, not appended)
"""
import os
import struct
import sys


class Raw:
    def __init__(self, b):
        self.b = b


class F32:
    def __init__(self, v):
        self.v = v


class Ext:
    def __init__(self, t, data):
        self.t, self.data = t, data


def _len_head(n, fix_base, fix_max, codes):
    """Header for str/bin/array/map of n items: fix form if allowed, else 8/16/32-bit."""
    if fix_base is not None and n <= fix_max:
        return bytes([fix_base | n])
    for code, fmt, lim in zip(codes, ("B", ">H", ">I"), (0xFF, 0xFFFF, 0xFFFFFFFF)):
        if code is not None and n <= lim:
            return bytes([code]) + struct.pack(fmt, n)
    raise ValueError(n)


def enc(v):
    if isinstance(v, Raw):
        return v.b
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if 0 <= v <= 0x7F:
            return bytes([v])
        if -32 <= v < 0:
            return struct.pack("b", v)
        if v >= 0:
            for code, fmt in ((0xCC, "B"), (0xCD, ">H"), (0xCE, ">I"), (0xCF, ">Q")):
                if v < 1 << (8 * struct.calcsize(fmt)):
                    return bytes([code]) + struct.pack(fmt, v)
        for code, fmt in ((0xD0, "b"), (0xD1, ">h"), (0xD2, ">i"), (0xD3, ">q")):
            bits = 8 * struct.calcsize(fmt)
            if -(1 << (bits - 1)) <= v:
                return bytes([code]) + struct.pack(fmt, v)
        raise ValueError(v)
    if isinstance(v, F32):
        return b"\xca" + struct.pack(">f", v.v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, str):
        b = v.encode()
        return _len_head(len(b), 0xA0, 31, (0xD9, 0xDA, 0xDB)) + b
    if isinstance(v, bytes):
        return _len_head(len(v), None, 0, (0xC4, 0xC5, 0xC6)) + v
    if isinstance(v, Ext):
        fix = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}
        if len(v.data) in fix:
            head = bytes([fix[len(v.data)]])
        else:
            head = _len_head(len(v.data), None, 0, (0xC7, 0xC8, 0xC9))
        return head + struct.pack("b", v.t) + v.data
    if isinstance(v, list):
        return _len_head(len(v), 0x90, 15, (None, 0xDC, 0xDD)) + b"".join(enc(x) for x in v)
    if isinstance(v, dict):
        return _len_head(len(v), 0x80, 15, (None, 0xDE, 0xDF)) + b"".join(
            enc(k) + enc(x) for k, x in v.items())
    raise TypeError(type(v))


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


def req(i, method, params=None):
    return enc([0, i, method, params if params is not None else {}])


def resp(i, result=None, error=None):
    return enc([1, i, error, result])


def notif(method, params):
    return enc([2, method, params])


def nested(depth, empty=False):
    """A request whose deepest container sits at `depth` (the message array is 1)."""
    inner = [] if empty else [None]
    for _ in range(depth - 3):
        inner = [inner]
    return req(1, "ping", {"a": inner})


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "proto")
    os.makedirs(out, exist_ok=True)
    for old in os.listdir(out):
        if old.startswith("seed-"):
            os.unlink(os.path.join(out, old))

    ping = frame(req(1, "ping"))
    every_type = {
        "nil": None, "t": True, "f": False, "fix": 7, "neg": -5, "u8": 200, "u16": 60000,
        "u32": 4000000000, "u64": 2**64 - 1, "i8": -100, "i16": -30000, "i32": -2**31,
        "i64": -2**63, "f32": F32(1.5), "f64": -0.125, "nan": float("nan"), "str8": "s" * 40,
        "str16": "w" * 300, "bin8": b"\x00\xff", "bin16": b"b" * 260,
        "ext": [Ext(1, b"a"), Ext(2, b"ab"), Ext(3, b"abcd"), Ext(4, b"a" * 8),
                Ext(5, b"a" * 16), Ext(-1, b"abc"), Ext(6, b"")],
        "arr16": list(range(20)), "map16": {str(i): i for i in range(17)},
    }
    seeds = {
        # valid requests, one per method (foundation and planned)
        "req-ping": ping,
        "req-ping-nil-params": frame(enc([0, 2, "ping", None])),
        "req-ping-empty-array-params": frame(enc([0, 3, "ping", []])),
        "req-version": frame(req(4, "version")),
        "req-status": frame(req(5, "status")),
        "req-shutdown": frame(req(6, "shutdown")),
        "req-index": frame(req(7, "index", {"path": "/home/u/src/coarch",
                                            "options": {"wait": True, "exclude": ["build"]}})),
        "req-search": frame(req(8, "search", {"query": "parse a frame", "repo": "/r", "k": 10,
                                              "mode": "hybrid", "path": "src/", "lang": "c"})),
        "req-jobs-cancel": frame(req(9, "jobs")) + frame(req(10, "job.cancel", {"job": 3})),
        "req-embed": frame(req(11, "embed", {"texts": ["int main(void)", "", "é ü"]})),
        "req-subscribe": frame(req(12, "subscribe", {"events": ["progress"]})),
        "req-unknown-keys": frame(req(13, "ping", {"future": [1, {"x": None}], "k": -1})),
        "req-max-id": frame(req(2**32 - 1, "ping")),
        "req-ids-int-encodings": b"".join(frame(Raw(b"\x94\x00" + i + b"\xa4ping\x80").b)
                                          for i in (b"\xd0\x05", b"\xd1\x01\x00",
                                                    b"\xd2\x00\x01\x00\x00",
                                                    b"\xd3\x00\x00\x00\x00\xff\xff\xff\xff")),
        "req-every-type": frame(req(14, "ping", every_type)),
        # responses
        "resp-pong": frame(resp(1, "pong")),
        "resp-version": frame(resp(4, {"version": "0.1.0", "protocol": 1, "backends": ["cpu"]})),
        "resp-status": frame(resp(5, {"pid": 4242, "version": "0.1.0", "protocol": 1,
                                      "uptime_ms": 123456, "socket": "/run/user/1000/c.sock",
                                      "data_dir": "/home/u/.local/share/coarch",
                                      "connections": 2, "requests": 99,
                                      "memory": {"rss_bytes": 52428800, "limit_bytes": 0},
                                      "state": "running"})),
        "resp-error": frame(resp(9, None, {"code": -32601, "message": "unknown method 'x'"})),
        "resp-search": frame(resp(8, {"results": [
            {"path": "proto/scan.c", "start_line": 10, "end_line": 42, "score": 0.83,
             "symbol": "proto_scan", "language": "c", "snippet": "int proto_scan(...)"}] * 3})),
        "resp-embed": frame(resp(11, {"dim": 4, "vectors": [struct.pack("<4f", 1, 0, 0, 0)]})),
        # notifications
        "notif-progress": frame(notif("progress", {
            "job": 1, "files_done": 10, "files_total": 20, "chunks_done": 100,
            "chunks_total": 200, "chunks_per_s": 87.5, "eta_ms": 1200, "rss_bytes": 1 << 26,
            "level": "moderate", "batch_size": 48})),
        # several frames in one stream, including all three kinds
        "stream-mixed": ping + frame(resp(1, "pong")) + frame(notif("progress", {"job": 1}))
                        + frame(req(2, "status")),
        # truncations and framing damage
        "trunc-frame": (ping + frame(req(2, "status")))[:-3],
        "trunc-header": b"\x00\x00",
        "trunc-payload-in-frame": frame(req(1, "ping"))[:4] + b"\x94\x00\x01",
        "oversized-header": b"\xff\xff\xff\xff\x94\x00\x01\xa4ping\x80",
        "empty-frame": b"\x00\x00\x00\x00" + ping,
        "bad-then-good": frame(b"\x94\x00\x2a\xc1\xc0") + ping,
        "trailing-bytes": frame(req(1, "ping") + b"\xc0") + ping,
        "never-used-byte": frame(b"\xc1"),
        "huge-count-little-data": frame(b"\x94\x00\x01\xa1m\x81\xa1a\xdd\xff\xff\xff\xff\xc0"),
        "huge-str-little-data": frame(b"\x94\x00\x01\xa1m\x81\xa1a\xdb\x7f\xff\xff\xff"),
        # nesting and limits
        "nested-32": frame(nested(32)),
        "nested-33": frame(nested(33)),
        "nested-6-empty": frame(nested(6, True)),
        "elements-9": frame(req(1, "ping", {"a": [None] * 9, "b": {str(i): i for i in range(9)}})),
        "str-25": frame(req(1, "ping", {"s": "x" * 25})),
        # wrong shapes
        "shape-not-array": frame(enc({"a": 1})),
        "shape-request-of-3": frame(enc([0, 8, "ping"])),
        "shape-id-negative": frame(enc([0, -1, "ping", {}])),
        "shape-id-too-big": frame(enc([0, 2**32, "ping", {}])),
        "shape-method-int": frame(enc([0, 9, 5, {}])),
        "shape-params-array": frame(enc([0, 9, "ping", [1]])),
        "shape-type-3": frame(enc([3, 9, "ping", {}])),
        "shape-error-int": frame(enc([1, 9, 5, None])),
        # bare payloads
        "payload-request": req(1, "search", {"query": "q", "k": 5}),
        "payload-every-type": enc([2, "progress", every_type]),
    }
    for name, data in seeds.items():
        with open(os.path.join(out, "seed-" + name), "wb") as f:
            f.write(data)
    print(f"wrote {len(seeds)} seed files to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
