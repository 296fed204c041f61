#!/usr/bin/env python3
"""Deterministic tree of mixed files for benches/bulk/blobs.sh.

    python3 benches/bulk/gen_blobs.py OUT_DIR [TOTAL_MB]

About TOTAL_MB (default 1000) megabytes: 60% in a few large files, 20% in
medium files, 20% in many small ones; half of every group text-like
(people records with Chinese names: zstd-1 gets about 3x) and half random
(incompressible). The same arguments always give the same bytes.
"""

import os
import random
import sys

NAMES = ["王伟", "李娜", "张敏", "刘洋", "陈静", "杨磊", "黄艳", "赵杰", "周芳", "吴强"]
CITIES = ["北京", "上海", "广州", "深圳", "成都", "杭州", "武汉", "西安"]


def text_pool(rng, size):
    lines = []
    n = 0
    i = 0
    while n < size:
        line = "%d,%s,1%010d,%06d%08d%04d,%s市%s路%d号,%d.%02d,2026-%02d-%02d\n" % (
            i,
            rng.choice(NAMES),
            rng.randrange(10**10),
            rng.randrange(100000, 999999),
            rng.randrange(19400101, 20101231),
            rng.randrange(10000),
            rng.choice(CITIES),
            rng.choice(NAMES),
            rng.randrange(1, 999),
            rng.randrange(100000),
            rng.randrange(100),
            rng.randrange(1, 13),
            rng.randrange(1, 29),
        )
        b = line.encode()
        lines.append(b)
        n += len(b)
        i += 1
    return b"".join(lines)


def text_bytes(rng, pool, size):
    # Slices of a 16 MB pool at random offsets: no two files alike, and
    # repeats are farther apart than zstd-1's window, so the ratio is that
    # of the records themselves.
    out = bytearray()
    while len(out) < size:
        start = rng.randrange(0, len(pool) - (1 << 20))
        out += pool[start : start + min(1 << 20, size - len(out))]
    return bytes(out)


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def main():
    out = sys.argv[1]
    total = int(sys.argv[2]) * 1_000_000 if len(sys.argv) > 2 else 1_000_000_000
    rng = random.Random(20261121)
    pool = text_pool(rng, 16 << 20)

    def blob(i, size):
        return text_bytes(rng, pool, size) if i % 2 == 0 else rng.randbytes(size)

    large = total * 6 // 10 // 4
    for i in range(4):
        ext = "csv" if i % 2 == 0 else "bin"
        write(os.path.join(out, "large", "file-%d.%s" % (i, ext)), blob(i, large))
    medium = 5_000_000
    for i in range(max(1, total * 2 // 10 // medium)):
        ext = "log" if i % 2 == 0 else "jpg"
        write(os.path.join(out, "medium", "d%d" % (i % 5), "m-%03d.%s" % (i, ext)), blob(i, medium))
    small_total = total * 2 // 10
    i = 0
    n = 0
    while n < small_total:
        size = rng.randrange(1, 100_000)
        ext = "txt" if i % 2 == 0 else "png"
        name = os.path.join(out, "small", "s%02d" % (i % 40), "文件-%05d.%s" % (i, ext))
        write(name, blob(i, size))
        n += size
        i += 1
    write(os.path.join(out, "small", "empty.txt"), b"")


if __name__ == "__main__":
    main()
