#!/usr/bin/env python3
"""The people CSV as zstd Parquet with the PostgreSQL table's types, the
input of the Parquet -> PostgreSQL scenario (written by pyarrow, so no
contender made its own input).

    python to_parquet.py IN.csv OUT.parquet [--zstd-level L]
"""
import argparse

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

SCHEMA = pa.schema([
    ("id", pa.int64()),
    ("name", pa.string()),
    ("phone", pa.string()),
    ("id_card", pa.string()),
    ("dept_code", pa.int32()),
    ("amount", pa.decimal128(12, 2)),
    ("created_at", pa.timestamp("us")),
    ("address", pa.string()),
])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("out")
    ap.add_argument("--zstd-level", type=int, default=1)
    a = ap.parse_args()
    reader = pacsv.open_csv(
        a.csv,
        read_options=pacsv.ReadOptions(block_size=16 << 20),
        convert_options=pacsv.ConvertOptions(column_types={f.name: f.type for f in SCHEMA}),
    )
    with pq.ParquetWriter(a.out, SCHEMA, compression="zstd", compression_level=a.zstd_level) as w:
        for batch in reader:
            w.write_batch(batch.cast(SCHEMA))


if __name__ == "__main__":
    main()
