"""tlapp's medical imaging plugin: DICOM classification with standard-conformant pixel handling."""
