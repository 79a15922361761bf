"""Shared fixtures. Capability fixtures live in their own modules, registered here."""

pytest_plugins = ["tests.pg", "tests.env"]


def pytest_unconfigure(config) -> None:
    """The fault suite's totals (tests/faults.py) as the session's very last line, when it ran."""
    from tests.faults import TALLY

    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if TALLY.tried and reporter is not None:
        reporter.write_line(TALLY.line())
