"""The lineage items of series the cohort left out as not volumes: listed, and the volumes' rows point at them."""

from __future__ import annotations

import json

from radassets.lineage.items import _cohort, volume_item


def test_a_series_excluded_by_the_index_traces_to_the_cohort_not_to_a_download(tmp_path):
    lock = {"series": [{"crdc_series_uuid": "u-ct", "SeriesInstanceUID": "1.2.ct", "PatientID": "P", "Modality": "CT"}],
            "excluded": [{"crdc_series_uuid": "u-scout", "SeriesInstanceUID": "1.2.scout", "PatientID": "P",
                          "Modality": "CT", "reason": "one single-frame CT image (IDC index)"}]}
    (tmp_path / "cohort.lock.json").write_text(json.dumps(lock))
    items = {i["item_id"]: i for i in _cohort(None, tmp_path, None)}
    assert set(items) == {"series:u-ct", "series:u-scout"}
    assert items["series:u-scout"]["status"] == "excluded"
    row = {"crdc_series_uuid": "u-scout", "Modality": "CT", "SeriesInstanceUID": "1.2.scout", "PatientID": "P",
           "status": "excluded", "code": "excluded_by_index", "message": "series 1.2.scout: one single-frame CT image"}
    assert volume_item(row)["parents"] == ["series:u-scout"]
    assert volume_item(dict(row, status="ok", code=None))["parents"] == ["dicom:u-scout"]
