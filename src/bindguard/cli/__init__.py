"""The command-line interface; the only layer that imports typer and rich."""
