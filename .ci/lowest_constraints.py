"""Print pip constraints that pin every dependency of pyproject.toml (extras included) to its lowest allowed version.

CI installs the project once with these constraints and once without, so both ends of every range are tested.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement


def lowest_pins(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    pins = []
    for line in requirements:
        requirement = Requirement(line)
        if requirement.name == project["name"]:  # the package's own extras
            continue
        lower = [spec.version for spec in requirement.specifier if spec.operator in (">=", "==", "~=")]
        if not lower:
            sys.exit(f"{line!r} has no lower bound; every range must have one that CI can test.")
        pins.append(f"{requirement.name}=={lower[0]}")
    return sorted(set(pins))


if __name__ == "__main__":
    print("\n".join(lowest_pins(Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml"))))
