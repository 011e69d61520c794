#!/usr/bin/env python3
"""Run ccflow's ClickHouse schema and analyst queries on a real ClickHouse
engine (chDB, the embedded ClickHouse from PyPI) and read the Parquet sink's
files with an independent reader (pyarrow).

Driven by sink/engine_test.go: it reads a JSON job from the file named by
argv[1] and writes a JSON report to the file named by argv[2]. The job holds
the rendered migrations (exactly what `ccflow migrate` applies), the column
lists the sinks write, the Parquet sink's directory and the queries of
docs/queries.md. Steps:

1. create the tables in a chDB session from the migrations (database ch);
2. report every table's columns (name, type) for the Go test to compare;
3. load the Parquet files into the tables (INSERT ... SELECT FROM file());
4. insert one block twice under one insert_deduplication_token and report
   the row counts of flows and of the rollup before and after;
5. create views over the Parquet files with the tables' names (database pq),
   and the rollup as a view aggregating pq.flows with the materialized
   view's own SELECT;
6. run every query in both databases and report the rows;
7. dump every Parquet table's rows with pyarrow for the Go test to compare.

Any failure raises; the Go test shows stderr.
"""
import glob
import json
import os
import sys

import chdb
import pyarrow.parquet as pq

TABLES = ["flows", "beacon_pairs", "cc_candidates"]


def q(sess, sql, fmt="JSONCompact"):
    try:
        res = sess.query(sql, fmt)
    except Exception as e:  # chDB raises its own error types
        raise RuntimeError(f"query failed: {e}\n--- query ---\n{sql}") from None
    return res


def rows(sess, sql):
    out = q(sess, sql, "JSONCompact").bytes()
    if not out:
        return []
    return json.loads(out)["data"]


def structure(sess, db, table):
    cols = rows(sess, f"SELECT name, type FROM system.columns WHERE database = '{db}' AND table = '{table}' ORDER BY position")
    return cols


def glob_of(pdir, table):
    return os.path.join(pdir, table, "date=*", "*.parquet")


def arrow_value(v):
    if isinstance(v, (bytes, bytearray)):
        return v.hex()
    if isinstance(v, list):
        return [arrow_value(x) for x in v]
    if hasattr(v, "timestamp"):  # datetime
        return round(v.timestamp() * 1000)
    return v


def dump_parquet(pdir, table):
    files = sorted(f for f in glob.glob(glob_of(pdir, table)))
    out = []
    for f in files:
        t = pq.read_table(f)
        for row in t.to_pylist():
            out.append({k: arrow_value(v) for k, v in row.items()})
    return {"files": len(files), "rows": out}


def main():
    job = json.load(open(sys.argv[1]))
    report = {"engine_version": None, "columns": {}, "counts": {}, "dedup": {}, "queries": [], "pyarrow": {}}
    os.chdir(job["workdir"])
    sess = chdb.connect(":memory:")
    report["engine_version"] = rows(sess, "SELECT version()")[0][0]
    q(sess, "CREATE DATABASE ch")
    q(sess, "USE ch")
    for i, stmt in enumerate(job["statements"]):
        q(sess, stmt)
    for t in job["tables"]:
        report["columns"][t] = structure(sess, "ch", t)

    pdir = job["parquet_dir"]
    for t in TABLES:
        cols = structure(sess, "ch", t)
        names = ", ".join(f"`{n}`" for n, _ in cols)
        struct = ", ".join(f"`{n}` {typ}" for n, typ in cols)
        q(sess, f"INSERT INTO ch.{t} ({names}) SELECT {names} FROM file('{glob_of(pdir, t)}', Parquet, '{struct.replace(chr(39), chr(92) + chr(39))}')")
        report["counts"][t] = rows(sess, f"SELECT count() FROM ch.{t}")[0][0]

    # Deduplication: the same block twice under one token is stored once,
    # in the table and in the rollup fed by the materialized view.
    def dedup_counts():
        return [rows(sess, "SELECT count() FROM ch.flows")[0][0], rows(sess, "SELECT sum(flows) FROM ch.remote_hourly")[0][0]]

    report["dedup"]["before"] = dedup_counts()
    block = "SELECT * FROM ch.flows ORDER BY time_start, sub, remote_addr, bytes LIMIT 100"
    report["dedup"]["block_rollup_rows"] = rows(sess, f"SELECT countIf(kind = 'subscriber') FROM ({block})")[0][0]
    for _ in range(2):
        q(sess, "INSERT INTO ch.flows SETTINGS insert_deduplicate = 1, insert_deduplication_token = 'ccflow-test-block', "
                "deduplicate_blocks_in_dependent_materialized_views = 1, max_threads = 1, max_insert_threads = 1 " + block)
        report["dedup"].setdefault("after", []).append(dedup_counts())
    # Undo the extra block so both databases hold the same rows.
    q(sess, "TRUNCATE TABLE ch.flows")
    q(sess, "TRUNCATE TABLE ch.remote_hourly")
    cols = structure(sess, "ch", "flows")
    names = ", ".join(f"`{n}`" for n, _ in cols)
    struct = ", ".join(f"`{n}` {typ}" for n, typ in cols).replace("'", "\\'")
    q(sess, f"INSERT INTO ch.flows ({names}) SELECT {names} FROM file('{glob_of(pdir, 'flows')}', Parquet, '{struct}')")

    # Views over the Parquet files, named like the tables.
    q(sess, "CREATE DATABASE pq")
    for t in TABLES:
        struct = ", ".join(f"`{n}` {typ}" for n, typ in structure(sess, "ch", t)).replace("'", "\\'")
        q(sess, f"CREATE VIEW pq.{t} AS SELECT * FROM file('{glob_of(pdir, t)}', Parquet, '{struct}')")
    for name, select, create in rows(sess, "SELECT name, as_select, create_table_query FROM system.tables WHERE database = 'ch' AND engine = 'MaterializedView'"):
        target = create.split(" TO ", 1)[1].split()[0].split(".")[-1].strip("`")
        casts = ", ".join(f"CAST(`{n}` AS {typ}) AS `{n}`" for n, typ in structure(sess, "ch", target))
        q(sess, f"CREATE VIEW pq.{target} AS SELECT {casts} FROM ({select.replace('ch.', 'pq.')})")
        report.setdefault("rollup_views", []).append(target)

    for i, sql in enumerate(job["queries"]):
        res = {}
        for db in ("ch", "pq"):
            q(sess, f"USE {db}")
            res[db] = rows(sess, sql)
        report["queries"].append(res)

    for t in TABLES:
        report["pyarrow"][t] = dump_parquet(pdir, t)
    sess.close()
    json.dump(report, open(sys.argv[2], "w"))


if __name__ == "__main__":
    main()
