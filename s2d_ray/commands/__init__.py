"""The ``s2d`` subcommands, one module each: ``add_arguments(parser)`` and ``run(args)``.

A module's docstring is its ``--help`` text; ``SUMMARY`` is its line in ``s2d --help``.
"""

COMMANDS = ("prepare", "experts", "static", "distill", "evaluate", "tune", "spaces")
