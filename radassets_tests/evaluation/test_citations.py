"""What the reports cite: the collections as the cohort lockfile records them (DOI, licence, IDC release with IDC's
own paper), the models as the registry records them (citation, licence) with the weights' sha256 the embeddings
record, the works a result rests on, the software; licences that restrict use flagged; a references.bib that parses.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

import radassets
from radassets import datasets
from radassets.datasets import Source
from radassets.demo import DemoSpec, ensure_demo_source
from radassets.evaluation.citations import (IDC, NSCLC_RADIOMICS, Citations, CitationError, ModelCitation, bib_escape,
                                            hosny2018_citations, licence_restrictions, model_citation)
from radassets.evaluation.compare_report import compare_models
from radassets.evaluation.report import evaluate_model
from radassets.idc.cohorts import cohort_for, write_cohort
from radassets.idc.index import source_root
from radassets.layout import Layout
from radassets.models import registry
from radassets.packaged import packaged_data_dir
from radassets_tests.conftest import REPO, SMALL_DEMO_SPEC
from radassets_tests.evaluation.test_reports_object_store import fake_inputs

DEMO = "demo_v1"
MODELS = ("radiomics", "untrained_cnn")


def parse_bibtex(text: str) -> dict[str, dict[str, str]]:
    """key → {field: value} of a .bib text, checking what a BibTeX reader needs: every entry opens with
    ``@type{key,``, braces balance (escaped ``\\{``/``\\}`` aside) within each entry, keys are unique. Written
    here because neither bibtexparser nor pybtex is installed in the project's environment."""
    entries: dict[str, dict[str, str]] = {}
    for chunk in re.split(r"\n(?=@)", text.strip()):
        head = re.match(r"@(\w+)\{([^,\s{}]+),\n", chunk)
        assert head, f"not a BibTeX entry: {chunk[:60]!r}"
        key = head.group(2)
        assert key not in entries, f"key {key} used twice"
        depth = 0
        for ch in re.sub(r"\\[{}]", "", chunk):
            depth += {"{": 1, "}": -1}.get(ch, 0)
            assert depth >= 0, f"{key}: a closing brace without its opening one"
        assert depth == 0, f"{key}: unbalanced braces"
        entries[key] = dict(re.findall(r"^  (\w+) = \{(.*)\},$", chunk, flags=re.MULTILINE))
    return entries


@pytest.fixture(scope="module")
def demo_lockfile(small_demo, tmp_path_factory) -> Path:
    """The small demo's cohort lockfile, as the cohort step writes it."""
    home = tmp_path_factory.mktemp("cohort") / "home"
    home.mkdir()
    (home / "demo").symlink_to(small_demo)
    layout = Layout(home)
    definition = datasets.get(DEMO)
    ensure_demo_source(definition, layout, DemoSpec(**SMALL_DEMO_SPEC))
    return write_cohort(cohort_for(definition, layout), layout)


@pytest.fixture(scope="module")
def evaluated(demo_lockfile, tmp_path_factory) -> Layout:
    """Two models evaluated and compared on demo_v1 (30 patients' embeddings, the demo's cohort lockfile), with a
    registry where radiomics' licence is non-commercial, no derivatives."""
    layout = Layout(tmp_path_factory.mktemp("evaluated") / "home")
    fake_inputs(layout)
    layout.cohort_lockfile(DEMO).parent.mkdir(parents=True)
    shutil.copy(demo_lockfile, layout.cohort_lockfile(DEMO))
    models = layout.root / "registry"
    models.mkdir()
    for model in MODELS:
        shutil.copy(REPO / "data" / "models" / f"{model}.yaml", models)
    entry = yaml.safe_load((models / "radiomics.yaml").read_text())
    (models / "radiomics.yaml").write_text(yaml.safe_dump({**entry, "licence": "CC BY-NC-ND 4.0"}))
    definition = datasets.get(DEMO)
    for model in MODELS:
        evaluate_model(definition, model, layout.asset_dir("embeddings", DEMO, model), layout.seeds_table(DEMO),
                       layout.asset_dir("evaluation", DEMO, model), source_root=source_root(definition, layout),
                       layout=layout, registry_dir=models)
    compare_models(definition, layout.asset_dir("evaluation", DEMO), layout.asset_dir("embeddings", DEMO),
                   layout.seeds_table(DEMO), layout.asset_dir("comparison", DEMO),
                   source_root=source_root(definition, layout), layout=layout, registry_dir=models)
    return layout


def test_a_demo_evaluation_cites_the_collection_doi_and_licence_as_its_lockfile_records_them(evaluated):
    lock = json.loads(evaluated.cohort_lockfile(DEMO).read_text())
    [collection] = lock["collections"]
    out = evaluated.asset_dir("evaluation", DEMO, "untrained_cnn")
    cited = json.loads((out / "metrics.json").read_text())["citations"]
    [source] = cited["sources"]
    assert source["kind"] == "demo" and source["idc_version"] == lock["idc_version"]
    assert source["content_hash"] == lock["content_hash"]
    assert source["collections"] == [{"collection_id": collection["collection_id"],
                                      "source_doi": collection["source_DOI"], "doi_url": collection["doi_url"],
                                      "licence": collection["license_short_name"], "series": collection["series"]}]
    report = (out / "report.md").read_text()
    assert f"doi:{collection['source_DOI']}, {collection['license_short_name']}" in report
    assert "## How to cite" in report and "synthetic" in report and "not from IDC" in report
    assert IDC.doi not in report  # demo images are not IDC's: its paper is not cited
    bib = parse_bibtex((out / "references.bib").read_text())
    [key] = [k for k, e in bib.items() if e.get("doi") == collection["source_DOI"]]
    assert bib[key]["note"] == f"Licence: {collection['license_short_name']}"


def test_each_model_is_cited_as_the_registry_records_it_with_the_weights_of_its_embeddings(evaluated):
    comparison = json.loads((evaluated.asset_dir("comparison", DEMO) / "metrics.json").read_text())
    registered = {m: registry.get(m, evaluated.root / "registry") for m in MODELS}
    cited = {m["name"]: m for m in comparison["citations"]["models"]}
    assert sorted(cited) == sorted(MODELS)
    for name, entry in registered.items():
        manifest = json.loads((evaluated.asset_dir("embeddings", DEMO, name) / "manifest.json").read_text())
        assert cited[name]["title"] == entry.title and cited[name]["licence"] == entry.licence
        assert cited[name]["citation"] == (" ".join(entry.citation.split()) if entry.citation else None)
        assert cited[name]["weights_sha256"] == manifest["weights_sha256"] == comparison["models"][name][
            "weights_sha256"]
    report = (evaluated.asset_dir("comparison", DEMO) / "report.md").read_text()
    assert " ".join(registered["radiomics"].citation.split()) in report
    assert f"licence: {registered['untrained_cnn'].licence}" in report
    # A model with pinned weights: the sha256 the embeddings recorded, never the registry's current pin (a report
    # cites what ran; the pin may have changed since).
    fmcib = registry.get("fmcib")
    assert model_citation("fmcib", None).weights_sha256 is None
    assert model_citation("fmcib", "ab" * 32).weights_sha256 == "ab" * 32
    assert f"weights sha256 {'ab' * 32}" in Citations(models=(model_citation("fmcib", "ab" * 32),)).methods()
    assert fmcib.weights.sha256 not in Citations(models=(model_citation("fmcib", None),)).methods()


def test_a_restricted_licence_is_flagged_in_report_md_and_html(evaluated):
    warning = "⚠ Licence restriction: model radiomics: CC BY-NC-ND 4.0 — non-commercial use only; no derivatives"
    for folder in (evaluated.asset_dir("evaluation", DEMO, "radiomics"), evaluated.asset_dir("comparison", DEMO)):
        assert f"> {warning}" in (folder / "report.md").read_text()
        assert f"<blockquote class='warning'>{warning}" in (folder / "report.html").read_text()
        assert json.loads((folder / "metrics.json").read_text())["citations"]["restricted"] == [
            {"item": "model radiomics", "licence": "CC BY-NC-ND 4.0",
             "binds": "non-commercial use only; no derivatives (do not share modified versions)"}]
    # The untrained model's evaluation (Apache-2.0, CC0 demo images) has nothing to flag.
    report = (evaluated.asset_dir("evaluation", DEMO, "untrained_cnn") / "report.md").read_text()
    assert "Licence restriction" not in report


def test_the_citations_name_no_absolute_path_and_leave_the_lineage_id_alone(evaluated):
    for folder in (evaluated.asset_dir("evaluation", DEMO, "radiomics"), evaluated.asset_dir("comparison", DEMO)):
        metrics = json.loads((folder / "metrics.json").read_text())
        assert str(evaluated.root) not in json.dumps(metrics["citations"])
        assert metrics["citations"]["software"]["radassets_version"] == radassets.__version__
        assert metrics["citations"]["software"]["git_commit"] == radassets.git_commit()
    # The evaluation's lineage id is the hash of its inputs: another registry (radiomics' shipped licence) changes
    # what is cited, not the lineage id.
    definition = datasets.get(DEMO)
    before = json.loads((evaluated.asset_dir("evaluation", DEMO, "radiomics") / "metrics.json").read_text())
    again = evaluate_model(definition, "radiomics", evaluated.asset_dir("embeddings", DEMO, "radiomics"),
                           evaluated.seeds_table(DEMO), evaluated.root / "again",
                           source_root=source_root(definition, evaluated), layout=evaluated)
    assert again.lineage_id == before["lineage_id"]
    assert again.metrics["citations"]["restricted"] == [] != before["citations"]["restricted"]


def test_without_a_cohort_lockfile_the_collections_are_named_without_doi_and_say_why(tmp_path):
    [source] = Citations.of_dataset(datasets.get(DEMO), Layout(tmp_path), {}).sources
    assert [c.collection_id for c in source.collections] == ["radassets_demo"]
    assert source.collections[0].source_doi is None
    assert source.note == (f"no cohort lockfile at cohort/{DEMO}/cohort.lock.json: the collections' DOIs and "
                           f"licences are not recorded")


def test_references_bib_parses_with_unique_keys_and_one_entry_per_reference(evaluated):
    for folder in (evaluated.asset_dir("evaluation", DEMO, "radiomics"), evaluated.asset_dir("comparison", DEMO)):
        metrics = json.loads((folder / "metrics.json").read_text())
        bib = parse_bibtex((folder / "references.bib").read_text())
        assert list(bib) == [r["key"] for r in metrics["citations"]["references"]]
        assert bib["radassets"]["version"] == radassets.__version__


def test_bibtex_special_characters_are_escaped_and_the_entry_still_parses():
    assert bib_escape(r"a_b & {c} 50% #1 $x ~ ^ \ ") == (r"a\_b \& \{c\} 50\% \#1 \$x \textasciitilde{} "
                                                         r"\textasciicircum{} \textbackslash{} ")
    odd = Citations(models=(ModelCitation(name="odd_model", title="A_b & {unbalanced 100% #1",
                                        citation="Doe J. T}tle_with & odd {chars. J 2020;1:1.",
                                        weights_sha256=None, licence="CC BY-NC 4.0"),))
    bib = parse_bibtex(odd.bibtex())
    assert bib["model-odd_model"]["title"] == r"A\_b \& \{unbalanced 100\% \#1"


def test_two_dois_of_one_collection_get_two_stable_keys():
    from radassets.evaluation.citations import Collection, ImageSource

    source = ImageSource("idc", "x", (Collection("nsclc_radiomics", "10.7937/k9/tcia.2015.pf0m9rei", None, "CC BY-NC 3.0"),
                                      Collection("nsclc_radiomics", "10.5281/zenodo.7473970", None, "CC BY 4.0")), 16)
    keys = [k for k, _ in Citations((source,)).references()]
    assert keys == ["fedorov2023idc", "nsclc_radiomics-10_7937_k9_tcia_2015_pf0m9rei",
                    "nsclc_radiomics-10_5281_zenodo_7473970", "radassets"]
    assert list(parse_bibtex(Citations((source,)).bibtex())) == keys


def test_an_idc_cohort_cites_its_release_and_idcs_paper_and_flags_a_non_commercial_collection(tmp_path):
    definition = datasets.get("nsclc_radiomics_idc_v16")
    layout = Layout(tmp_path)
    cohort = cohort_for(definition, layout)  # from the bundled index
    write_cohort(cohort, layout)
    citations = Citations.of_dataset(definition, layout, {"fmcib": None})
    [collection] = cohort.collections
    text = citations.methods()
    assert (f"the nsclc_radiomics collection (doi:{collection['source_DOI']}, {collection['license_short_name']}"
            in text)
    assert f"NCI Imaging Data Commons (IDC), release v16 ({cohort.idc_release_date}) [1]" in text
    assert citations.references()[0] == ("fedorov2023idc", IDC.reference())
    assert "RadioGraphics 2023;43(12):e230180. doi:10.1148/rg.230180" in IDC.reference()
    assert [str(r) for r in citations.restricted()] == [
        f"nsclc_radiomics (doi:{collection['source_DOI']}): CC BY-NC 3.0 — non-commercial use only"]
    # FMCIB's weights licence asks to check the record's terms: shown, not called restricted.
    assert citations.to_check() == [f"model fmcib: {registry.get('fmcib').licence}"]
    assert "Licence terms to read" in citations.markdown()


def test_the_hosny_collection_is_lung1_as_the_bundled_index_and_the_reference_licences_record_it():
    import duckdb
    import idc_index_data

    rows = duckdb.sql(f"SELECT DISTINCT source_DOI, license_short_name FROM '{idc_index_data.IDC_INDEX_PARQUET_FILEPATH}' "
                      f"WHERE collection_id = 'nsclc_radiomics'").fetchall()
    assert (NSCLC_RADIOMICS.source_doi.lower(), NSCLC_RADIOMICS.licence) in rows  # DOIs are case-insensitive
    licences = (packaged_data_dir() / "reference" / "LICENSES.md").read_text()
    assert "| nsclc_radiomics | nsclc_radiomics (LUNG1) | CC BY-NC 3.0 (images)" in licences
    assert "Hosny et al. (PLoS Med 2018) and Bontempi et al." in licences.replace("\n", " ")
    works = [w.doi for w in hosny2018_citations().works]
    assert works == ["10.1371/journal.pmed.1002711", "10.1038/s41467-024-51202-2"]


def test_a_local_dataset_says_not_from_idc_and_invents_no_doi(tmp_path):
    definition = datasets.get(DEMO).model_copy(update={"source": Source(kind="local", idc_version=1, path="/x")})
    citations = Citations.of_dataset(definition, Layout(tmp_path), {"radiomics": None})
    assert citations.sources[0].kind == "local" and citations.sources[0].collections == ()
    text = citations.markdown()
    assert "local images, not from IDC" in text and "doi:" not in text.split("### References")[0]
    assert IDC.doi not in text
    assert [k for k, _ in citations.references()] == ["model-radiomics", "radassets"]


def test_the_comparison_lineage_id_follows_the_results_not_the_commit_or_the_registry(evaluated, tmp_path,
                                                                                        monkeypatch):
    """The evaluations' metrics cite the code's commit and the registry's licence texts; re-evaluating the same
    inputs under another commit and registry gives the same results, so the comparison keeps its lineage id (its
    Dagster data version and its stamp) while what it cites changes."""
    definition = datasets.get(DEMO)
    before = json.loads((evaluated.asset_dir("comparison", DEMO) / "metrics.json").read_text())
    layout = Layout(tmp_path / "home")
    shutil.copytree(evaluated.root, layout.root, symlinks=True)
    monkeypatch.setattr(radassets, "git_commit", lambda: "0123456789abcdef0123456789abcdef01234567-dirty")
    for model in MODELS:  # the shipped registry: radiomics' licence is no longer non-commercial
        evaluate_model(definition, model, layout.asset_dir("embeddings", DEMO, model), layout.seeds_table(DEMO),
                       layout.asset_dir("evaluation", DEMO, model), source_root=source_root(definition, layout),
                       layout=layout)
    again = compare_models(definition, layout.asset_dir("evaluation", DEMO), layout.asset_dir("embeddings", DEMO),
                           layout.seeds_table(DEMO), layout.asset_dir("comparison", DEMO),
                           source_root=source_root(definition, layout), layout=layout)
    cited = json.loads((layout.asset_dir("comparison", DEMO) / "metrics.json").read_text())["citations"]
    assert cited["software"]["git_commit"].startswith("0123456789abcdef") and cited != before["citations"]
    assert again.lineage_id == before["lineage_id"]


def test_licence_texts_that_restrict_use():
    assert licence_restrictions("CC BY-NC 3.0") == ["non-commercial use only"]
    assert licence_restrictions("CC BY-NC-ND 4.0") == ["non-commercial use only",
                                                        "no derivatives (do not share modified versions)"]
    assert licence_restrictions("code Apache-2.0; weights NVIDIA non-commercial licence") == ["non-commercial use only"]
    for free in ("CC BY 4.0", "CC0 1.0", "MIT", "Apache-2.0", "BSD-3-Clause (pyradiomics)", None,
                 "code MIT; weights as published on Zenodo record 10528450 (check the record's terms)"):
        assert licence_restrictions(free) == [], free


def test_a_collection_under_other_terms_is_listed_to_check_and_an_open_one_is_not():
    from radassets.evaluation.citations import Collection, ImageSource

    def cited(licence: str) -> Citations:
        return Citations((ImageSource("idc", "v1", (Collection("c", "10.1/x", None, licence),)),))

    nlm = "National Library of Medicine Terms and Conditions; May 21, 2019"
    assert cited(nlm).to_check() == [f"c: {nlm}"] and cited(nlm).restricted() == []
    assert "Licence terms to read" in cited(nlm).markdown()
    for open_licence in ("CC BY 4.0", "CC BY-SA 4.0", "CC0 1.0"):
        assert cited(open_licence).to_check() == [], open_licence
    assert cited("CC BY-NC 3.0").to_check() == []  # flagged as restricted instead
    assert [r.licence for r in cited("CC BY-NC 3.0").restricted()] == ["CC BY-NC 3.0"]


def test_the_citations_record_reads_back_and_a_malformed_one_is_a_clear_error():
    citations = hosny2018_citations()
    assert Citations.from_json(json.loads(json.dumps(citations.as_json()))) == citations
    with pytest.raises(CitationError, match="citations record: missing or unexpected field 'sources'"):
        Citations.from_json({})


def test_the_score_report_cites_the_hosny_works_and_flags_lung1s_licence(tmp_path):
    from radassets.defs.evaluation import HOSNY
    from radassets.evaluation.scores import evaluate_scores

    data = packaged_data_dir()
    report = evaluate_scores(data / HOSNY["scores"], "PatientID", "CNN_logit0", data / HOSNY["clinical"], "PatientID",
                             "Survival.time", "deadstatus.event", 730, "alive", tmp_path,
                             threshold_from=data / HOSNY["threshold_from"], threshold_column="logit_0", n_boot=100,
                             title="Hosny", citations=hosny2018_citations())
    md = (tmp_path / "report.md").read_text()
    assert md.startswith("# Score evaluation: Hosny")
    assert f"| {report.auc:.3g} | {report.auc_ci_low:.3g}–{report.auc_ci_high:.3g} |" in md
    assert f"| log-rank p | {report.logrank_p:.3g} | |" in md and "![km.png](km.png)" in md
    assert "doi:10.1371/journal.pmed.1002711" in md and "doi:10.1038/s41467-024-51202-2" in md
    assert "> ⚠ Licence restriction: nsclc_radiomics (doi:10.7937/K9/TCIA.2015.PF0M9REI): CC BY-NC 3.0" in md
    html = (tmp_path / "report.html").read_text()
    assert "<blockquote class='warning'>" in html and html.count("data:image/png;base64,") == 2
    assert set(parse_bibtex((tmp_path / "references.bib").read_text())) == {
        "hosny2018deep", "bontempi2024endtoend", "nsclc_radiomics-10_7937_k9_tcia_2015_pf0m9rei", "radassets"}
