"""The deterministic demo collection: real DICOM files of synthetic chest CT, with known answers."""

from radassets.demo.generator import (DemoCollection, DemoError, DemoSpec, ensure_demo_collection,
                                      ensure_demo_source, generate_demo_collection)

__all__ = ["DemoCollection", "DemoError", "DemoSpec", "ensure_demo_collection", "ensure_demo_source",
           "generate_demo_collection"]
