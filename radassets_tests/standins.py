"""Stand-ins for services the tests cannot reach: BigQuery."""

from __future__ import annotations

import re

import duckdb


class DuckDBBigQueryStandIn:
    """Answers radassets' BigQuery cohort query from DuckDB tables shaped like idc_vN.dicom_all.

    Translates only what the query uses: the table name, array parameters and raw strings.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con
        self.queries: list[str] = []

    def query(self, query: str, job_config=None):
        self.queries.append(query)
        sql = re.sub(r"`bigquery-public-data\.idc_v(\d+)\.dicom_all`", r"dicom_all_v\1", query)
        sql = re.sub(r"IN UNNEST\(@(\w+)\)", r"IN (SELECT unnest($\1))", sql)
        sql = re.sub(r"\br'", "'", sql)
        params = {p.name: p.values for p in job_config.query_parameters}
        cursor = self.con.execute(sql, params)
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, r)) for r in cursor.fetchall()]
        return type("Job", (), {"result": lambda self: iter(rows)})()
