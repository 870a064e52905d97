"""One module per command (group) of the ``cncnn`` CLI."""
