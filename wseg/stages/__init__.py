"""Pipeline stages. Each module has ``add_arguments(parser)`` (the published flags) and ``run(args)``; the CLI in
``scripts/`` and the pipeline runner call the same ``run``. Stages talk only through files on disk."""
