"""What every room uses: the error types and exit codes, and atomic file writes."""
