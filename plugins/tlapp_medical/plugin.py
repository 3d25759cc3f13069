"""Hook implementations of the medical plugin."""

from tlcore import hookimpl

from . import formats
from .task import DicomClassification
from .transforms import PIPELINES


@hookimpl
def register_tasks(register):
    register(DicomClassification())


@hookimpl
def register_augmentations(register):
    for name, (factory, description) in PIPELINES.items():
        register(name, factory, description)


@hookimpl
def register_dataset_formats(register):
    register("dicom-folders", formats.index_folders, "DICOM files in one sub-folder per class "
             "(optionally under train/ val/ test/)")
    register("dicom-manifest", formats.read_manifest, "CSV manifest: path,label[,patient_id][,split], or a label "
             "column per task (data.label_columns)")
