"""Print the dependency list of pyproject.toml (plus the named extras), one per line.

The Makefile installs from this so pyproject.toml stays the one list of pins.
"""

import sys
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
deps = list(project["dependencies"])
for extra in sys.argv[1:]:
    deps += project["optional-dependencies"][extra]
print("\n".join(deps))
