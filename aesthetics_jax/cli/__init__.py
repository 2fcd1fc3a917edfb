"""The command-line programs (installed as `aesthetics-*`, see pyproject's [project.scripts]).

One module per command: absl flags, `main(argv)`, and `run_cli()` (the entry point: checks
argv, then `common.run(main, __doc__)`). They hold no library code: each parses and checks its flags
before anything slow loads, calls the library, and turns its one-line errors into exit
statuses (`common`). `launch/<command>.py` in a checkout forwards here.
"""
