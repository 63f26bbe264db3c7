"""Decode throughput: N pgoutput Update messages (5 text columns) built in memory.

python bench/decode_bench.py [N]
"""

from __future__ import annotations

import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from replicator.source.pgoutput import decode  # noqa: E402


def text_tuple(values: list[str]) -> bytes:
    out = struct.pack(">h", len(values))
    for v in values:
        raw = v.encode()
        out += b"t" + struct.pack(">i", len(raw)) + raw
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
    msgs = [
        b"U"
        + struct.pack(">I", 16384)
        + b"N"
        + text_tuple(
            [str(i), f"customer-{i % 977}", "2024-05-01 12:34:56.789+00", f"{i * 1.25:.2f}", "active"]
        )
        for i in range(n)
    ]
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        for m in msgs:
            decode(m)
        rate = n / (time.perf_counter() - t0)
        best = max(best, rate)
    print(f"decoded {n} Update messages (5 text columns, {len(msgs[0])} bytes each): best {best:,.0f} msgs/s")


if __name__ == "__main__":
    main()
