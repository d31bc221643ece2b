"""Command-line front end of the LoRA-ML toolkit (see :mod:`loraml.cli`)."""
