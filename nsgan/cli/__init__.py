"""The `nsgan` command: argument parsing and exit codes only, a module per command; the work is done by the library."""
