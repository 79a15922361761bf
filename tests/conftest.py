"""Shared fixtures. Capability fixtures live in their own modules, registered here."""

pytest_plugins = ["tests.pg"]


def pytest_terminal_summary(terminalreporter) -> None:
    """The fault suite's totals as the last line, when it ran (tests/faults.py)."""
    from tests.faults import TALLY

    if TALLY.tried:
        terminalreporter.write_line(TALLY.line())
