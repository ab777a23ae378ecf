"""Stand-ins for what the tests cannot reach: BigQuery, and a researcher's own trained encoder."""

from __future__ import annotations

import re

import duckdb
import torch


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


class TinyEncoder(torch.nn.Module):
    """A researcher's own 3-D encoder in miniature (one strided convolution, global pooling, fixed seed),
    to be saved as TorchScript or ONNX and registered with `radassets models add`."""

    def __init__(self, channels: int = 6):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv3d(1, channels, 3, stride=2)
        self.pool = torch.nn.AdaptiveAvgPool3d(1)

    def forward(self, x):
        return self.pool(torch.relu(self.conv(x))).flatten(1)
