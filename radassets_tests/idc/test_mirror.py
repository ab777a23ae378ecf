"""Which mirror a dataset version's series are copied from: a run's mirror, the settings' IDC mirror, the demo's
own bucket, or the public IDC buckets."""

from __future__ import annotations

from radassets import datasets
from radassets.idc.dicom import mirror_for
from radassets.idc.download import Mirror
from radassets.layout import Layout


def test_the_settings_mirror_stands_in_for_idc_and_never_hides_the_demo_bucket(tmp_path):
    layout = Layout(tmp_path)
    demo, idc = datasets.get("demo_v1"), datasets.get("nsclc_radiomics_idc_v25")
    settings_mirror = Mirror.s3("http://127.0.0.1:9")  # RADASSETS_IDC_MIRROR, for IDC work
    assert mirror_for(demo, layout, None, settings_mirror) == Mirror.local_folder(tmp_path / "demo" / "bucket")
    assert mirror_for(idc, layout, None, settings_mirror) == settings_mirror
    assert mirror_for(idc, layout, None, None) == Mirror.aws()
    run_mirror = Mirror.local_folder(tmp_path / "mirror")  # the idc resource's, set for one run: wins everywhere
    assert mirror_for(demo, layout, run_mirror, settings_mirror) == run_mirror
    assert mirror_for(idc, layout, run_mirror, settings_mirror) == run_mirror
