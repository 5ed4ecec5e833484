"""The framework's own tests. `outside_suite/` is a user's suite: it runs only from a temporary folder
outside the repository (tests/test_cli_and_plugin.py), never as part of this collection."""

collect_ignore = ["outside_suite"]
