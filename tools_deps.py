"""Print the dependency list of pyproject.toml (plus the named extras), one per line.

The Makefile installs from this so pyproject.toml stays the one list of pins.
"""

import sys
import tomllib

from common.cli import fail

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
deps = list(project["dependencies"])
extras = project.get("optional-dependencies", {})
for extra in sys.argv[1:]:
    if extra not in extras:
        fail("tools_deps.py", f"unknown extra {extra!r} (EXTRAS=); pyproject.toml has: {', '.join(extras)}")
    deps += extras[extra]
print("\n".join(deps))
