"""The ``ndunet`` application: argument parsing (cli.py), run-config files (run_config.py), the
assembly of data, model and trainer from a run config (assemble.py) and the demo. The library
never imports this package."""
