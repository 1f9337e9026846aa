"""The command line: thin typer commands over the library (`app`), and its entry point."""

from tailscale_wsl2.cli.app import app, main

__all__ = ["app", "main"]
