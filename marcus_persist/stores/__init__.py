"""One module per data type: its records, its messages, its actor handler, its API."""
