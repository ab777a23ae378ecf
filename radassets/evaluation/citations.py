"""What a result must cite, and the licences that bind its use: one owner for every report.

A ``Citations`` value is gathered from what the result used:

- the images (``ImageSource``): the collections of the dataset version's cohort lockfile, each with the DOI and
  licence the lockfile records, and the IDC release, with IDC's own citation (Fedorov et al. 2023, the paper IDC
  asks users to cite); a demo collection is named as synthetic and a ``datasets add-local`` folder as local images,
  never with an invented DOI;
- the models evaluated (``ModelCitation``): title, paper citation and licence from the model registry, and the
  sha256 of the weights the embeddings were computed with (the embeddings manifest's);
- other works the result rests on (``Work``: e.g. Hosny et al. 2018 for the published scores);
- the software (``Software``): radassets' version and git commit (as the lineage runs record them) and the
  versions of the libraries the statistics used.

It renders as a "How to cite" section of a report (``markdown``: a methods paragraph, the numbered references and,
when a licence restricts use, a warning block), as the ``citations`` key of ``metrics.json`` (``as_json``) and as a
``references.bib`` (``bibtex``). Nothing in it is an absolute path or a time, so ``metrics.json`` stays the same
bytes on every artifact root and run.
"""

from __future__ import annotations

import platform
import re
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import radassets
from radassets.datasets import DatasetVersion
from radassets.errors import RadassetsError
from radassets.layout import Layout

SourceKind = Literal["idc", "demo", "local", "reference"]

# The libraries whose code computes the statistics of a report (AUCs, bootstrap, kNN, Cox, Kaplan-Meier, DeLong).
STATISTICS_LIBRARIES = ("numpy", "scipy", "pandas", "scikit-learn", "lifelines")


class CitationError(RadassetsError, ValueError):
    """What a result must cite cannot be read (a malformed ``citations`` record)."""


@dataclass(frozen=True)
class Work:
    """A publication the result rests on, with what it is cited for (``role``, a phrase of the methods text)."""

    key: str  # the BibTeX key
    authors: str  # as printed: "Hosny A, Parmar C, Coroller TP, et al."
    bib_authors: str  # BibTeX: "Hosny, Ahmed and Parmar, Chintan and others"
    title: str
    journal: str
    year: int
    doi: str
    role: str
    volume: str | None = None
    number: str | None = None
    pages: str | None = None

    def reference(self) -> str:
        issue = f"({self.number})" if self.number else ""
        where = f"{self.year};{self.volume}{issue}:{self.pages}" if self.volume else str(self.year)
        return f"{self.authors} {self.title}. {self.journal} {where}. doi:{self.doi}"


# What IDC asks users to cite (the idc-index-data package's README; RadioGraphics 2023;43(12):e230180).
IDC = Work(
    key="fedorov2023idc", authors="Fedorov A, Longabaugh WJR, Pot D, et al.",
    bib_authors="Fedorov, Andrey and Longabaugh, William J. R. and Pot, David and others",
    title="National Cancer Institute Imaging Data Commons: Toward Transparency, Reproducibility, and Scalability "
          "in Imaging Artificial Intelligence",
    journal="RadioGraphics", year=2023, volume="43", number="12", pages="e230180", doi="10.1148/rg.230180",
    role="the NCI Imaging Data Commons")
HOSNY_2018 = Work(
    key="hosny2018deep", authors="Hosny A, Parmar C, Coroller TP, et al.",
    bib_authors="Hosny, Ahmed and Parmar, Chintan and Coroller, Thibaud P. and others",
    title="Deep learning for lung cancer prognostication: A retrospective multi-cohort radiomics study",
    journal="PLoS Med", year=2018, volume="15", number="11", pages="e1002711", doi="10.1371/journal.pmed.1002711",
    role="the CNN and its Figure 2 analysis (Hosny et al. 2018)")
BONTEMPI_2024 = Work(
    key="bontempi2024endtoend", authors="Bontempi D, Nuernberg L, Pai S, et al.",
    bib_authors="Bontempi, Dennis and Nuernberg, Leonard and Pai, Suraj and others",
    title="End-to-end reproducible AI pipelines in radiology using the cloud",
    journal="Nat Commun", year=2024, volume="15", pages="6931", doi="10.1038/s41467-024-51202-2",
    role="the per-patient scores of the original and the cloud re-implementation, as released by Bontempi et al. "
         "2024")


@dataclass(frozen=True)
class Collection:
    """One collection (and DOI) of a cohort, as its lockfile records it."""

    collection_id: str
    source_doi: str | None
    doi_url: str | None
    licence: str | None
    series: int | None = None


# LUNG1 as TCIA prints its DOI (IDC's index records it in lower case; DOIs are case-insensitive) and its licence
# (data/reference/LICENSES.md); the Hosny report reads its clinical table and published scores, not its images.
NSCLC_RADIOMICS = Collection("nsclc_radiomics", "10.7937/K9/TCIA.2015.PF0M9REI",
                             "https://doi.org/10.7937/K9/TCIA.2015.PF0M9REI", "CC BY-NC 3.0")


@dataclass(frozen=True)
class ImageSource:
    """Where a result's images (or tables) come from: a dataset version's cohort, or reference tables."""

    kind: SourceKind
    dataset_version: str | None
    collections: tuple[Collection, ...]
    idc_version: int | None = None
    idc_release_date: str | None = None
    modalities: tuple[str, ...] = ()
    content_hash: str | None = None  # the cohort lockfile's
    note: str | None = None  # why something is not recorded (no lockfile), or what the tables are


@dataclass(frozen=True)
class ModelCitation:
    name: str
    title: str
    citation: str | None
    weights_sha256: str | None
    licence: str
    in_registry: bool = True


@dataclass(frozen=True)
class Software:
    radassets_version: str
    git_commit: str | None
    libraries: dict[str, str]


@dataclass(frozen=True)
class Restriction:
    """A licence that restricts use, with what it binds: ``"<item>: <licence> — <what it binds>"``."""

    item: str
    licence: str
    binds: str

    def __str__(self) -> str:
        return f"{self.item}: {self.licence} — {self.binds}"


_OPEN_LICENCE = re.compile(r"^(CC[ -]BY([ -]SA)? \d\.\d|CC0 1\.0)$", re.IGNORECASE)  # nothing to check beyond citing
_NON_COMMERCIAL = re.compile(r"\bNC\b|non-?\s?commercial", re.IGNORECASE)
_NO_DERIVATIVES = re.compile(r"\bND\b|no\s?-?deriv", re.IGNORECASE)


def licence_restrictions(licence: str | None) -> list[str]:
    """What a licence's text restricts: non-commercial use only, no derivatives (empty: neither)."""
    if not licence:
        return []
    out = []
    if _NON_COMMERCIAL.search(licence):
        out.append("non-commercial use only")
    if _NO_DERIVATIVES.search(licence):
        out.append("no derivatives (do not share modified versions)")
    return out


def software(libraries: tuple[str, ...] = STATISTICS_LIBRARIES) -> Software:
    """radassets' version and git commit (``radassets.git_commit``, as the lineage runs record them), and the
    installed versions of ``libraries`` and Python."""
    versions = {}
    for name in libraries:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    versions["python"] = platform.python_version()
    return Software(radassets.__version__, radassets.git_commit(), versions)


def image_source(definition: DatasetVersion, layout: Layout | None) -> ImageSource:
    """The images of a dataset version, from its cohort lockfile under ``layout`` (``Layout.cohort_lockfile``)."""
    from radassets.idc.cohort import Cohort

    kind: SourceKind = definition.source.kind
    if kind == "local":  # a user's folder: no collection DOI to cite, and none is invented
        return ImageSource("local", definition.name, (), note="local images, not from IDC")
    lockfile = layout.cohort_lockfile(definition.name) if layout is not None else None
    if layout is None or lockfile is None or not lockfile.is_file():
        where = f"no cohort lockfile at {layout.relative(lockfile)}" if layout and lockfile else "no cohort lockfile"
        return ImageSource(kind, definition.name,
                           tuple(Collection(c, None, None, None) for c in definition.selection.collections),
                           idc_version=definition.source.idc_version,
                           note=f"{where}: the collections' DOIs and licences are not recorded")
    return source_of_cohort(Cohort.read(lockfile), kind)


def source_of_cohort(cohort: Any, kind: SourceKind = "idc") -> ImageSource:
    """The images of a cohort (``radassets.idc.cohort.Cohort``): its collections as its lockfile records them."""
    collections = tuple(Collection(c["collection_id"], c.get("source_DOI"), c.get("doi_url"),
                                   c.get("license_short_name"), c.get("series")) for c in cohort.collections)
    return ImageSource(kind, cohort.dataset_version, collections, cohort.idc_version, cohort.idc_release_date,
                       tuple(sorted({s["Modality"] for s in cohort.series})), cohort.content_hash)


def model_citation(name: str, weights_sha256: str | None, registry_dir: Path | None = None) -> ModelCitation:
    """A model as the registry records it (title, citation, licence), with the weights' sha256 the embeddings were
    computed with, as the embeddings recorded it (never the registry's current pin: the report cites what ran). A
    model no longer registered is named as such."""
    from radassets.models.registry import RegistryError, get

    try:
        entry = get(name, registry_dir)
    except RegistryError:
        return ModelCitation(name, name, None, weights_sha256, "not recorded: the model is not in the registry",
                             in_registry=False)
    return ModelCitation(name, entry.title, " ".join(entry.citation.split()) if entry.citation else None,
                         weights_sha256, entry.licence)


@dataclass(frozen=True)
class Citations:
    """Everything a result must cite (module docstring)."""

    sources: tuple[ImageSource, ...] = ()
    models: tuple[ModelCitation, ...] = ()
    works: tuple[Work, ...] = ()
    software: Software = field(default_factory=software)

    # -- gathering -------------------------------------------------------------------------
    @classmethod
    def of_dataset(cls, definition: DatasetVersion, layout: Layout | None, models: dict[str, str | None],
                   registry_dir: Path | None = None, works: tuple[Work, ...] = ()) -> Citations:
        """A dataset version's images and ``models`` (name → weights sha256 the embeddings record)."""
        return cls((image_source(definition, layout),),
                   tuple(model_citation(m, sha, registry_dir) for m, sha in sorted(models.items())), works)

    def works_cited(self) -> tuple[Work, ...]:
        """IDC's own citation when any images come from IDC, then the result's works (each once)."""
        out = [IDC] if any(s.kind == "idc" for s in self.sources) else []
        return tuple(out + [w for w in self.works if w not in out])

    # -- licences --------------------------------------------------------------------------
    def restricted(self) -> list[Restriction]:
        """The licences that restrict use (non-commercial, no derivatives), each with what it binds."""
        out = []
        for source in self.sources:
            for c in source.collections:
                if c.licence and (binds := licence_restrictions(c.licence)):
                    what = f"{c.collection_id} (doi:{c.source_doi})" if c.source_doi else c.collection_id
                    out.append(Restriction(what, c.licence, "; ".join(binds)))
        for m in self.models:
            if binds := licence_restrictions(m.licence):
                out.append(Restriction(f"model {m.name}", m.licence, "; ".join(binds)))
        return out

    def to_check(self) -> list[str]:
        """Licences that ask the user to read their terms (not called restricted: their text is shown): a model's
        that says so, and a collection's that is neither an open Creative Commons licence nor a restricted one
        (e.g. IDC's "National Library of Medicine Terms and Conditions")."""
        collections = [f"{c.collection_id}: {c.licence}" for s in self.sources for c in s.collections
                       if c.licence and not _OPEN_LICENCE.match(c.licence.strip()) and not licence_restrictions(c.licence)]
        return collections + [f"model {m.name}: {m.licence}" for m in self.models if "check" in m.licence.lower()]

    # -- the reference list ----------------------------------------------------------------
    def entries(self) -> list[Entry]:
        """The numbered references, in the order the methods paragraph numbers them: IDC (when any images come
        from it) and the works, the collections with a DOI, the model papers, radassets. Each text once, each
        BibTeX key unique."""
        entries = [Entry(w.key, w.reference(), "article", {
            "author": w.bib_authors, "title": w.title, "journal": w.journal, "year": str(w.year),
            "volume": w.volume, "number": w.number, "pages": w.pages, "doi": w.doi}) for w in self.works_cited()]
        for source in self.sources:
            entries += [Entry(_collection_key(c), _collection_reference(c, source), "misc", {
                "title": f"{c.collection_id} collection", "howpublished": _howpublished(source),
                "year": (source.idc_release_date or "")[:4] or None, "doi": c.source_doi, "url": c.doi_url,
                "note": f"Licence: {c.licence or 'not recorded'}"}) for c in source.collections if c.source_doi]
        entries += [Entry(f"model-{_slug(m.name)}", m.citation, "misc", {
            "title": m.title, "note": f"{m.citation} Licence: {m.licence}."
                                      + (f" Weights sha256 {m.weights_sha256}." if m.weights_sha256 else "")})
                    for m in self.models if m.citation]
        s = self.software
        entries.append(Entry("radassets", _software_reference(s), "software", {
            "title": "radassets: reproducible radiology-AI pipelines", "version": s.radassets_version,
            "note": f"git commit {s.git_commit or 'not recorded'}; "
                    + ", ".join(f"{k} {v}" for k, v in s.libraries.items())}))
        return _unique(entries)

    def references(self) -> list[tuple[str, str]]:
        """(BibTeX key, reference text), numbered from 1 in this order."""
        return [(e.key, e.text) for e in self.entries()]

    # -- renderings ------------------------------------------------------------------------
    def methods(self) -> str:
        """A methods-section paragraph a researcher can paste; ``[n]`` refer to ``references()``."""
        n = {e.text: i for i, e in enumerate(self.entries(), 1)}
        parts = [_source_sentence(s, n) for s in self.sources]
        if self.models:
            parts.append("Embeddings were computed with " + "; ".join(_model_phrase(m, n) for m in self.models) + ".")
        if self.works:
            parts.append("The analysis rests on "
                         + "; ".join(f"{w.role} [{n[w.reference()]}]" for w in self.works) + ".")
        parts.append(_software_sentence(self.software, n[_software_reference(self.software)]))
        return " ".join(parts)

    def warning_lines(self) -> list[str]:
        """The licence restrictions as warnings for the top of a report (none when no licence restricts use)."""
        return [line for r in self.restricted() for line in (f"> ⚠ Licence restriction: {r}", "")]

    def markdown_lines(self) -> list[str]:
        """The report's "How to cite" section: the methods paragraph, the references, the licence warnings."""
        lines = ["## How to cite", "", self.methods(), "", "### References", ""]
        for i, (key, text) in enumerate(self.references(), 1):
            lines += [f"[{i}] {text} (`{key}` in references.bib)", ""]
        restricted, check = self.restricted(), self.to_check()
        if restricted:  # one quote each (consecutive quoted lines would join into one paragraph)
            lines += ["### Licence restrictions", "", *self.warning_lines()]
        if check:
            lines += ["Licence terms to read before any use beyond research: " + "; ".join(check) + ".", ""]
        return lines

    def markdown(self) -> str:
        return "\n".join(self.markdown_lines())

    def as_json(self) -> dict[str, Any]:
        """The ``citations`` record of ``metrics.json`` (``from_json`` reads it back)."""
        return {"sources": [asdict(s) for s in self.sources], "models": [asdict(m) for m in self.models],
                "works": [asdict(w) for w in self.works], "software": asdict(self.software),
                "restricted": [asdict(r) for r in self.restricted()], "methods": self.methods(),
                "references": [{"key": k, "text": t} for k, t in self.references()]}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Citations:
        try:
            sources = tuple(ImageSource(**{**s, "collections": tuple(Collection(**c) for c in s["collections"]),
                                           "modalities": tuple(s["modalities"])}) for s in raw["sources"])
            return cls(sources, tuple(ModelCitation(**m) for m in raw["models"]),
                       tuple(Work(**w) for w in raw["works"]), Software(**raw["software"]))
        except (KeyError, TypeError) as e:
            raise CitationError(f"citations record: missing or unexpected field {e}") from None

    def bibtex(self) -> str:
        """The text of ``references.bib``: one entry per numbered reference."""
        return "\n".join(_bib(e.kind, e.key, e.fields) for e in self.entries())


@dataclass(frozen=True)
class Entry:
    """One numbered reference: its BibTeX key, its text in the report, its BibTeX entry type and fields."""

    key: str
    text: str
    kind: str
    fields: dict[str, str | None]


# -- the pieces of the renderings --------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _collection_key(c: Collection) -> str:
    # The DOI in the key: one collection may carry several DOIs (e.g. its images and IDC-derived segmentations).
    return f"{_slug(c.collection_id)}-{_slug(c.source_doi or 'no_doi')}"


def _unique(entries: list[Entry]) -> list[Entry]:
    """Each reference text once (two models citing one paper share it), keys made unique in order (a second
    ``k`` becomes ``k-2``): stable, since the order is the result's."""
    seen, used, out = set(), set(), []
    for e in entries:
        if e.text in seen:
            continue
        seen.add(e.text)
        key, i = e.key, 2
        while key in used:
            key, i = f"{e.key}-{i}", i + 1
        used.add(key)
        out.append(Entry(key, e.text, e.kind, e.fields))
    return out


def _howpublished(source: ImageSource) -> str:
    if source.kind == "idc":
        return f"NCI Imaging Data Commons, release v{source.idc_version}" + (
            f" ({source.idc_release_date})" if source.idc_release_date else "")
    if source.kind == "demo":
        return f"radassets demo collection (synthetic), release {source.idc_version}"
    return "The Cancer Imaging Archive"


def _collection_reference(c: Collection, source: ImageSource) -> str:
    return (f"{c.collection_id} collection. {_howpublished(source)}. doi:{c.source_doi}. "
            f"Licence: {c.licence or 'not recorded'}.")


def _collections_phrase(source: ImageSource, n: dict[str, int]) -> str:
    def one(c: Collection) -> str:
        if not c.source_doi:
            return f"the {c.collection_id} collection"
        series = f"; {c.series} series" if c.series is not None else ""
        return (f"the {c.collection_id} collection (doi:{c.source_doi}, {c.licence or 'licence not recorded'}"
                f"{series}) [{n[_collection_reference(c, source)]}]")

    return "; ".join(one(c) for c in source.collections) or "no collection"


def _source_sentence(source: ImageSource, n: dict[str, int]) -> str:
    what = _listed(source.modalities) + " series" if source.modalities else "Images"
    of = f" of dataset version {source.dataset_version}" if source.dataset_version else ""
    pinned = f", as pinned by its cohort lockfile (content hash {source.content_hash[:12]})" \
        if source.content_hash else ""
    unrecorded = f" ({source.note})" if source.note and source.kind != "local" else ""
    if source.kind == "local":
        return f"Images{of}: local images, not from IDC (a local DICOM folder; cite it as its owner requires)."
    if source.kind == "demo":
        return (f"{what}{of} are synthetic: {_collections_phrase(source, n)}, generated by radassets (demo release "
                f"{source.idc_version}), not from IDC{pinned}{unrecorded}.")
    if source.kind == "reference":
        return f"The clinical table and published scores of {_collections_phrase(source, n)} were used{unrecorded}."
    release = f"release v{source.idc_version}" + (f" ({source.idc_release_date})" if source.idc_release_date else "")
    return (f"{what} of {_collections_phrase(source, n)} were obtained from the NCI Imaging Data Commons (IDC), "
            f"{release} [{n[IDC.reference()]}]{pinned}{unrecorded}.")


def _listed(items: tuple[str, ...]) -> str:
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else "".join(items)


def _model_phrase(m: ModelCitation, n: dict[str, int]) -> str:
    ref = f" [{n[m.citation]}]" if m.citation else ""
    weights = f"weights sha256 {m.weights_sha256}" if m.weights_sha256 else "no trained weights file"
    registered = "" if m.in_registry else "; not in the model registry: cite it as its authors require"
    return f"{m.title}{ref} (radassets model `{m.name}`; {weights}; licence: {m.licence}{registered})"


def _software_reference(s: Software) -> str:
    return (f"radassets {s.radassets_version}, git commit {s.git_commit or 'not recorded'}. Statistics with "
            + ", ".join(f"{k} {v}" for k, v in s.libraries.items()) + ".")


def _software_sentence(s: Software, ref: int) -> str:
    return (f"The analysis was run with radassets {s.radassets_version} (git commit {s.git_commit or 'not recorded'}) "
            f"[{ref}]; statistics with " + ", ".join(f"{k} {v}" for k, v in s.libraries.items()) + ".")


_BIB_SPECIAL = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                "_": r"\_", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_VERBATIM_FIELDS = ("doi", "url")


def bib_escape(text: str) -> str:
    """A field's text with BibTeX's special characters escaped (one pass, so an escape is never escaped again)."""
    return "".join(_BIB_SPECIAL.get(ch, ch) for ch in text)


def _bib(kind: str, key: str, fields: dict[str, str | None]) -> str:
    lines = [f"@{kind}{{{key},"]
    for name, value in fields.items():
        if value is None:
            continue
        # biblatex reads doi and url verbatim: only a brace would break the entry there.
        value = value.replace("{", "%7B").replace("}", "%7D") if name in _VERBATIM_FIELDS else bib_escape(value)
        lines.append(f"  {name} = {{{value}}},")
    return "\n".join(lines) + "\n}\n"


# -- the results' citations ----------------------------------------------------------------------


def hosny2018_citations() -> Citations:
    """The Hosny et al. 2018 Figure 2 reproduction: LUNG1's published tables, the two papers, the software."""
    return Citations((ImageSource("reference", None, (NSCLC_RADIOMICS,)),), (), (HOSNY_2018, BONTEMPI_2024))


def write_bibtex(citations: Citations, out_dir: Path) -> Path:
    """``references.bib`` beside a report."""
    from radassets.storage import atomic_write_text

    return atomic_write_text(out_dir / "references.bib", citations.bibtex())
