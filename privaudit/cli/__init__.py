"""The command-line interface: one module per command, each parsing its flags into a config, making
one library call (through the public API in ``privaudit/__init__.py`` where there is one) and
rendering the result (``render.py``). The top of a command module imports only light modules
(Typer, Rich, ``privaudit.defaults``, ``privaudit.errors``, the CLI's own); the library is imported
inside the command, so ``--help``, ``gate`` and ``report`` start without torch."""
