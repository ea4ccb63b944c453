#!/usr/bin/env bash
# The system packages KartPilot's tests need, in one place: `make system-deps` (which `make test`
# runs first, and so CI) installs them; `make test-rom` fetches the GPL test ROM.
#
#   bash system_deps.sh                 install the missing ones (apt-get as root, else through sudo)
#   bash system_deps.sh PACKAGE...      the same for these packages only
#   bash system_deps.sh --list          print the packages, one a line, with what needs them
#   bash system_deps.sh --test-rom DEST fetch the GPL mupen64plus test ROM to DEST (sha256-checked)
#
# Cheap when everything is there: one dpkg-query, no apt-get, no root needed. Without root and
# without password-less sudo it installs nothing and prints the exact command to run. Without
# apt (not Debian/Ubuntu) it names what the tests need and goes on: tests needing a missing part
# skip, or fail under CI (tests/conftest.py). `make demo` needs none of these.
set -euo pipefail
PROG="system-deps"

# Debian/Ubuntu package: what needs it
PACKAGES=(
  "python3-venv: make setup (Debian's python3 has no venv/ensurepip without it)"
  "make: the Makefiles"
  "gcc: plugin_c (the C input plugin and its test harness)"
  "libc6-dev: plugin_c (C headers; gcc only recommends it)"
  "pkg-config: plugin_c (json-c flags)"
  "libjson-c-dev: plugin_c (json.h)"
  "libmupen64plus-dev: plugin_c (the mupen64plus plugin API headers)"
  "mupen64plus-ui-console: the real emulator (tests/test_plugin_emulator.py, envs/mupen, drive --rom)"
  "mupen64plus-video-rice: the emulator's video plugin"
  "mupen64plus-rsp-hle: the emulator's RSP plugin"
  "mupen64plus-audio-sdl: the emulator's audio plugin (the tests use --audio dummy)"
  "xvfb: virtual X displays (emulator, screen recorder tests)"
  "x11-utils: xwininfo, which finds the emulator window (record)"
  "chromium: the dashboard tests (headless, DevTools pipe)"
  "ca-certificates: HTTPS for make test-rom"
  "iproute2: ip, to bring up loopback in the network namespace of the two-node Ray test"
  "util-linux: unshare (private mount and network namespaces: full-disk and Ray tests)"
)
TEST_ROM_URL="https://github.com/mupen64plus/mupen64plus-rom/raw/76ef14c876ed036284154444c7bdc29d19381acc/m64p_test_rom.v64"
TEST_ROM_SHA256="b5fe9d650a67091c97838386f5102ad94c79232240f9c5bcc72334097d76224c"

names() { local p; for p in "${PACKAGES[@]}"; do echo "${p%%:*}"; done; }

strict() {  # the same rule as tests/conftest.py require_system(): CI, or KARTPILOT_REQUIRE_SYSTEM
  local own="${KARTPILOT_REQUIRE_SYSTEM:-}" ci="${CI:-}"
  if [ -n "$own" ]; then own="${own,,}"; [[ ! "$own" =~ ^(0|false|no|off)$ ]]; return; fi
  ci="${ci,,}"
  [ -n "$ci" ] && [[ ! "$ci" =~ ^(0|false|no|off)$ ]]
}

test_rom() {
  local dest="$1" py
  py="$(command -v python3 || true)"
  [ -n "$py" ] || { echo "$PROG: error: python3 is needed to fetch the test ROM" >&2; exit 2; }
  "$py" - "$dest" "$TEST_ROM_URL" "$TEST_ROM_SHA256" <<'PY'
import hashlib, os, sys, tempfile, urllib.request
dest, url, want = sys.argv[1:4]
strict = os.environ.get("STRICT") == "1"
if os.path.exists(dest):
    got = hashlib.sha256(open(dest, "rb").read()).hexdigest()
    if got == want:
        sys.exit(0)
    print(f"test-rom: {dest} is not the mupen64plus test ROM (sha256 {got}, want {want}); left as it is",
          file=sys.stderr)
    sys.exit(1 if strict else 0)
folder = os.path.dirname(os.path.abspath(dest))
os.makedirs(folder, exist_ok=True)
print(f"test-rom: fetching the GPL mupen64plus test ROM from {url}", file=sys.stderr)
fd, tmp = tempfile.mkstemp(prefix=".m64p_test_rom.", suffix=".tmp", dir=folder)
try:
    with os.fdopen(fd, "wb") as f:
        with urllib.request.urlopen(url, timeout=60) as r:
            data = r.read(4 << 20)
        got = hashlib.sha256(data).hexdigest()
        if got != want:
            raise ValueError(f"{url} has sha256 {got}, not {want}")
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, dest)
    print(f"test-rom: {dest}", file=sys.stderr)
except Exception as exc:  # network down, HTTP error, wrong bytes: the ROM tests skip (fail under CI)
    if os.path.exists(tmp):
        os.unlink(tmp)  # our own temporary file, never dest
    print(f"test-rom: could not fetch the test ROM: {exc}. Put m64p_test_rom.v64 at {dest} "
          "or set KARTPILOT_TEST_ROM; until then the tests that boot it skip (and fail under CI).", file=sys.stderr)
    sys.exit(1 if strict else 0)
PY
}

case "${1:-}" in
  --list)
    printf '%s\n' "${PACKAGES[@]}"; exit 0 ;;
  --test-rom)
    [ $# -eq 2 ] || { echo "usage: $0 --test-rom DEST" >&2; exit 2; }
    if strict; then export STRICT=1; fi
    test_rom "$2"; exit 0 ;;
  -h|--help)
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  -*)
    echo "$PROG: error: unknown option $1 (see --help)" >&2; exit 2 ;;
esac

if [ $# -gt 0 ]; then WANTED=("$@"); else mapfile -t WANTED < <(names); fi

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  echo "$PROG: no apt-get/dpkg-query here (not Debian/Ubuntu): install the equivalents of these" >&2
  echo "$PROG: Debian packages yourself; tests needing a missing one skip (and fail under CI):" >&2
  for p in "${PACKAGES[@]}"; do
    for w in "${WANTED[@]}"; do [ "${p%%:*}" = "$w" ] && echo "  $p" >&2; done
  done
  exit 0
fi

installed="$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${WANTED[@]}" 2>/dev/null || true)"
MISSING=()
for w in "${WANTED[@]}"; do
  grep -qxF "$w ii " <<<"$installed" || MISSING+=("$w")
done
[ ${#MISSING[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  echo "$PROG: error: missing Debian packages: ${MISSING[*]}" >&2
  echo "$PROG: installing them needs root (and there is no password-less sudo); run this, then make test again:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${MISSING[*]}" >&2
  exit 2
fi

echo "$PROG: installing ${MISSING[*]}" >&2
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
AVAILABLE=()
for m in "${MISSING[@]}"; do
  candidate="$(apt-cache policy "$m" 2>/dev/null | awk '/Candidate:/ {print $2}')"
  if [ -n "$candidate" ] && [ "$candidate" != "(none)" ]; then
    AVAILABLE+=("$m")
  else
    echo "$PROG: warning: $m is not in this machine's apt sources; tests needing it skip (and fail under CI)" >&2
  fi
done
if [ ${#AVAILABLE[@]} -gt 0 ]; then
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${AVAILABLE[@]}" \
    >/dev/null
fi
