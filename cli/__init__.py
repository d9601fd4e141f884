"""`alpr-ops`: the command line. `cli.app` builds the Typer app from the commands in `cli/commands/`."""
