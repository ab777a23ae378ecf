"""Real-scanner cases written with the demo generator's tools (pydicom, highdicom): what clinical CT and the
masks clinics make look like, one module per kind, for the tests and for users who want to try a case.

Each case is written into a folder as real DICOM files and comes with what it should convert to (its
geometry, or the lesion's true centre), so a test can check a conversion against a known answer as well as
against a reference tool (dcm2niix, plastimatch)."""
