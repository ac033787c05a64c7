"""The `ncodec` command line (click). Parses, calls the library, prints."""
