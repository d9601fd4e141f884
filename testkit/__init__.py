"""Helpers shared by the tests and the benchmarks. Installed with the package (pyproject's packages.find) so that
`python benchmarks/extract.py` imports it from any folder; the library itself (tasks, flows, cli) never does."""
