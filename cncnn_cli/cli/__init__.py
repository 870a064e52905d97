"""The command line: the Typer app (`main`) and one module per command. Only this package talks to people."""
