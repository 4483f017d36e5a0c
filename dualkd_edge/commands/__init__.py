"""The command line, one module per command: its Typer function `command` (options and help), its
request, and the work behind it. cli.py registers them; options.py holds the options and choices
several commands share. At module level these import only typer, the standard library and each
other (plus dualkd_edge.errors): heavy imports stay inside functions, so `dualkd-edge --help` is instant."""
