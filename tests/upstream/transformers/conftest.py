"""transformers' generic testers, from the sdist of the installed transformers, on LaVIN and on LLaVA as the control.

`.ci/upstream_transformers` fetches the sdist into a cache and points `TRANSFORMERS_LAVIN_UPSTREAM_TESTS` at its
`tests/` folder; without it this folder is not collected (the README's `pytest tests` leaves it out).

- The sdist's test files are imported as the package `transformers_upstream_tests`. The modules they import but the
  sdist does not ship come from `standins/` (see its README), searched after the sdist's folder.
- `tests/upstream/not_applicable.yaml`, key `transformers`, lists the tests that do not apply, per tester class, with
  the reason and the doc section that states the difference. A listed test must fail (it is then reported as an
  expected failure) or be skipped by upstream; one that passes fails the run, and so does an entry that matches no
  test or a doc link to a section that does not exist.
- A test upstream skips itself (a modality the processor lacks, a GPU-only test) must be skipped for the control as
  well: a skip for LaVIN alone fails the run.
- The summary counts pass / fail / not applicable / skipped per tester, LaVIN beside the control.
"""

import fnmatch
import importlib.machinery
import importlib.util
import os
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).parent
REPO = HERE.parents[2]
NOT_APPLICABLE = HERE.parent / "not_applicable.yaml"
UPSTREAM_TESTS = os.environ.get("TRANSFORMERS_LAVIN_UPSTREAM_TESTS")
PACKAGE = "transformers_upstream_tests"
SubtestReport = getattr(pytest, "SubtestReport", ())  # pytest 9 reports unittest subtests on their own

if not UPSTREAM_TESTS:
    collect_ignore_glob = ["*"]
else:
    collect_ignore = ["standins"]


def _install_upstream_package(tests_dir: Path) -> None:
    """Make the sdist's `tests/` importable as `transformers_upstream_tests`, with `standins/` behind it."""
    if not (tests_dir / "test_modeling_common.py").is_file():
        raise pytest.UsageError(f"{tests_dir} holds no transformers tests; run .ci/upstream_transformers.")
    spec = importlib.machinery.ModuleSpec(PACKAGE, None, is_package=True)
    spec.submodule_search_locations = [str(tests_dir), str(HERE / "standins")]
    sys.modules[PACKAGE] = importlib.util.module_from_spec(spec)
    # test_processing_common imports `fetch_hub_objects_for_ci` as a top-level module.
    sys.path.insert(0, str(HERE / "standins"))


def _github_anchor(heading: str) -> str:
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def _check_doc_link(link: str) -> str | None:
    """An error message if `link` (`docs/x.md#anchor`) names no heading of an existing file, else None."""
    path, _, anchor = link.partition("#")
    file = REPO / path
    if not file.is_file():
        return f"doc link {link}: no file {path}"
    headings = {_github_anchor(line.lstrip("#")) for line in file.read_text().splitlines() if line.startswith("#")}
    if anchor and anchor not in headings:
        return f"doc link {link}: no heading with anchor #{anchor} in {path}"
    return None


class _NotApplicable:
    """The `transformers` entries of not_applicable.yaml and which tests they matched."""

    def __init__(self, path: Path):
        entries = (yaml.safe_load(path.read_text()) or {}).get("transformers") or {}
        self.entries = []  # (tester, model, test name pattern, reason, doc)
        self.errors = []
        for tester, groups in entries.items():
            for group in groups:
                missing = {"tests", "models", "reason", "doc"} - set(group)
                if missing:
                    self.errors.append(f"{path.name}: an entry under {tester} lacks {sorted(missing)}")
                    continue
                if error := _check_doc_link(group["doc"]):
                    self.errors.append(f"{path.name}: {error}")
                for model in group["models"]:
                    for pattern in group["tests"]:
                        self.entries.append((tester, model, pattern, " ".join(group["reason"].split()), group["doc"]))
        self.matched = set()

    def lookup(self, tester: str, model: str, test_name: str):
        for entry in self.entries:
            if entry[:2] == (tester, model) and fnmatch.fnmatchcase(test_name, entry[2]):
                self.matched.add(entry[:3])
                return entry
        return None

    def unmatched(self, collected: set[tuple[str, str]]) -> list[str]:
        """The entries for a collected (tester, model) that matched no test."""
        return [
            f"{tester} ({model}): {pattern}"
            for tester, model, pattern, *_ in self.entries
            if (tester, model) in collected and (tester, model, pattern) not in self.matched
        ]


def _tester(item) -> tuple[str, str] | None:
    """(upstream tester, model) of an item of the test classes here, else None."""
    cls = getattr(item, "cls", None)
    if cls is None or not hasattr(cls, "upstream_tester"):
        return None
    return cls.upstream_tester, cls.model_name


class UpstreamRun:
    """A plugin for the run: per test, its tester, model, outcome and (for a listed one) its entry."""

    def __init__(self):
        self.not_applicable = _NotApplicable(NOT_APPLICABLE)
        self.tests = {}  # node id -> (tester, model, name)
        self.listed = {}  # node id -> not_applicable entry
        self.failed_subtests = set()  # node ids with a failing subtest
        self.outcomes = defaultdict(dict)  # (tester, model) -> {name: outcome}
        self.skips = defaultdict(list)  # (tester, model, name) -> why upstream skipped it (or some subtests)
        self.full_run = False
        self.problems = []

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, config, items):
        for item in items:
            if (tester := _tester(item)) is not None:
                self.tests[item.nodeid] = (*tester, item.name)
                if (entry := self.not_applicable.lookup(*tester, item.name)) is not None:
                    self.listed[item.nodeid] = entry
        # Only whole files tell an entry that matches nothing from one outside a selection.
        self.full_run = not config.option.keyword and not any("::" in arg for arg in config.args)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report):
        """Account for a report, and turn a listed test's failure into the expected one it is (tryfirst: the
        session's failure count and the terminal see the report as it is recorded here)."""
        if report.nodeid not in self.tests or (report.when != "call" and report.passed):
            return
        tester, model, name = self.tests[report.nodeid]
        entry = self.listed.get(report.nodeid)
        if isinstance(report, SubtestReport):
            if report.failed:
                self.failed_subtests.add(report.nodeid)
                if entry is not None:
                    report.outcome, report.wasxfail = "skipped", f"not applicable: {entry[3]}"
            elif report.skipped:
                self.skips[(tester, model, name)].append(str(report.longrepr[-1]))
            return
        failed = report.failed or report.nodeid in self.failed_subtests
        if report.skipped:
            self.skips[(tester, model, name)].append(f"the whole test: {report.longrepr[-1]}")
        if entry is None:
            outcome = "skipped" if report.skipped else "failed" if failed else "passed"
        elif failed or self.skips[(tester, model, name)]:  # fails as listed, or upstream finds it does not apply
            outcome = "not applicable"
            if failed:
                report.outcome, report.wasxfail = "skipped", f"not applicable: {entry[3]} ({entry[4]})"
        else:
            outcome = "listed, but passes"
            report.outcome = "failed"
            report.longrepr = f"listed as not applicable in {NOT_APPLICABLE.name} ({entry[3]}), but passes: unlist it"
        self.outcomes[(tester, model)][name] = outcome

    def find_problems(self) -> list[str]:
        problems = list(self.not_applicable.errors)
        if self.full_run:
            collected = {(tester, model) for tester, model, _ in self.tests.values()}
            unmatched = self.not_applicable.unmatched(collected)
            problems += [f"{NOT_APPLICABLE.name} entry matches no test: {entry}" for entry in unmatched]
        controls = {tester: model for tester, model in self.outcomes if model != "lavin"}
        for (tester, model), outcomes in sorted(self.outcomes.items()):
            control = controls.get(tester)
            for name, outcome in outcomes.items():
                if outcome == "listed, but passes":
                    problems.append(f"{tester} ({model})::{name} is listed as not applicable, but passes")
                skips = self.skips[(tester, model, name)]
                if model != "lavin" or not control or outcome == "not applicable" or not skips:
                    continue
                # Upstream skips (all of a test, or some of its subtests) must be the control's too.
                control_outcome = self.outcomes[(tester, control)].get(name)
                whole = outcome == "skipped" and control_outcome != "skipped"
                if whole or len(skips) > len(self.skips[(tester, control, name)]):
                    problems.append(
                        f"{tester}::{name} is skipped for LaVIN more than for {control} ({skips[0]}): list it or fix it"
                    )
        return problems

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session, exitstatus):
        self.problems = self.find_problems()
        if self.problems and exitstatus == 0:
            session.exitstatus = 1

    def pytest_terminal_summary(self, terminalreporter):
        write = terminalreporter.write_line
        terminalreporter.section("transformers' testers: LaVIN beside the control")
        columns = ("passed", "failed", "not applicable", "listed, but passes", "skipped")
        write(f"{'tester':<30}" + "".join(f"{column:>20}" for column in columns))
        for (tester, model), outcomes in sorted(self.outcomes.items(), key=lambda kv: (kv[0][0], kv[0][1] != "lavin")):
            counts = Counter(outcomes.values())
            write(f"{f'{tester} ({model})':<30}" + "".join(f"{counts[column]:>20}" for column in columns))
        for problem in self.problems:
            write(f"PROBLEM: {problem}", red=True)


def pytest_configure(config):
    if not UPSTREAM_TESTS:
        return
    _install_upstream_package(Path(UPSTREAM_TESTS))
    # The sdist's test files use markers declared in transformers' own pytest settings, which the sdist leaves out.
    config.addinivalue_line("filterwarnings", "ignore::pytest.PytestUnknownMarkWarning")
    config.pluginmanager.register(UpstreamRun(), "transformers-upstream-run")
