"""One flag style for every console script: underscores (`--output_dir`), as TRL and transformers spell them.

`lavin-train` parses with `HfArgumentParser`, which already accepts each option with hyphens too. Scripts built on
`argparse` get the same with [`UnderscoreArgumentParser`]: every long option is accepted in both spellings, and
`--help` lists the underscore one. Its parsing errors (an unknown option, a bad value) are [`UserInputError`]s, so
every script reports them as it reports other bad input: one `prog: error: ...` line and exit status 1.
"""

from __future__ import annotations

import argparse

from .cli_errors import UserInputError


def both_spellings(option: str) -> list[str]:
    """`--output_dir` or `--output-dir` -> `["--output_dir", "--output-dir"]`; other strings are returned alone."""
    if not option.startswith("--"):
        return [option]
    name = option[2:]
    underscore, hyphen = f"--{name.replace('-', '_')}", f"--{name.replace('_', '-')}"
    return [underscore] if underscore == hyphen else [underscore, hyphen]


def _spelled(names) -> list[str]:
    return list(dict.fromkeys(spelling for name in names for spelling in both_spellings(name)))


class _UnderscoreGroup(argparse._ArgumentGroup):
    def add_argument(self, *names, **kwargs):
        return super().add_argument(*_spelled(names), **kwargs)


class _UnderscoreExclusiveGroup(argparse._MutuallyExclusiveGroup):
    def add_argument(self, *names, **kwargs):
        return super().add_argument(*_spelled(names), **kwargs)


class UnderscoreArgumentParser(argparse.ArgumentParser):
    """An `ArgumentParser` whose long options take underscores or hyphens (`--max_new_tokens`, `--max-new-tokens`)."""

    def add_argument(self, *names, **kwargs):
        return super().add_argument(*_spelled(names), **kwargs)

    def error(self, message: str):
        raise UserInputError(f"{message} ({self.prog} --help lists the options).")

    def add_argument_group(self, *args, **kwargs):
        group = _UnderscoreGroup(self, *args, **kwargs)
        self._action_groups.append(group)
        return group

    def add_mutually_exclusive_group(self, **kwargs):
        group = _UnderscoreExclusiveGroup(self, **kwargs)
        self._mutually_exclusive_groups.append(group)
        return group

    def format_help(self) -> str:
        # Show one spelling per option: the hyphen aliases would double every line.
        hidden = []
        for action in self._actions:
            aliases = [s for s in action.option_strings if s.startswith("--") and "-" in s[2:] and "_" not in s[2:]]
            visible = [
                s for s in action.option_strings if s not in aliases or len(aliases) == len(action.option_strings)
            ]
            hidden.append((action, action.option_strings))
            action.option_strings = visible
        try:
            return super().format_help()
        finally:
            for action, strings in hidden:
                action.option_strings = strings


__all__ = ["UnderscoreArgumentParser", "both_spellings"]
