"""One module per codec family. Import a codec through ncodec.registry, not directly."""
