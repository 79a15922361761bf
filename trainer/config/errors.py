"""Configuration problems: each names its variable, the key inside its JSON and what is accepted;
`ConfigError` carries every problem found, so one restart shows them all."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One configuration problem: the variable, the key inside its JSON, what is wrong and accepted."""

    variable: str
    message: str
    key: str | None = None

    def __str__(self) -> str:
        return f"{self.variable}.{self.key}: {self.message}" if self.key else f"{self.variable}: {self.message}"


class ConfigError(Exception):
    """Bad input: every problem found, each naming its variable (and key) and what is accepted.
    `variable` and `key` are the first problem's; `problems` holds them all."""

    def __init__(self, variable: str | list[Problem], message: str | None = None, key: str | None = None):
        self.problems = list(variable) if isinstance(variable, list) else [Problem(variable, message or "", key)]
        self.variable, self.key = self.problems[0].variable, self.problems[0].key
        if len(self.problems) == 1:
            text = str(self.problems[0])
        else:
            text = f"{len(self.problems)} problems:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(text)


class Problems(list):
    """The problems found so far; load_config raises them together at the end."""

    def add(self, variable: str, message: str, key: str | None = None) -> None:
        self.append(Problem(variable, message, key))
