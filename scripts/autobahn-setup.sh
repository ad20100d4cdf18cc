#!/usr/bin/env bash
# Installs the Autobahn TestSuite's `wstest` for scripts/autobahn.sh when the shared copy
# (../shared/autobahn beside the repository) is not there.
#
# wstest runs only on Python 2.7 and Debian 12 ships no Python 2, so Debian 11's python2.7
# packages are fetched with `apt-get download` from the machine's own Debian mirror, with a
# private apt state (the system's sources and package state are not modified), unpacked with
# `dpkg -x` into $AUTOBAHN_HOME (default ~/.cache/autobahn-py27, the same tree the shared
# setup uses), and pip 20.3.4, the last pip for Python 2, installs the pinned
# autobahn/requirements-py27.txt there. Idempotent; about 30 s the first time.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
REQUIREMENTS="$ROOT/autobahn/requirements-py27.txt"
PREFIX="${AUTOBAHN_HOME:-$HOME/.cache/autobahn-py27}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

if [ ! -x "$PREFIX/usr/bin/python2.7" ]; then
  mkdir -p "$WORK/lists/partial" "$WORK/cache/archives/partial" "$WORK/debs"
  touch "$WORK/status"
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$mirror" ] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$mirror" ] || { echo "autobahn-setup: no Debian mirror found in the apt sources" >&2; exit 1; }
  echo "deb $mirror bullseye main" > "$WORK/sources.list"
  apt_opts=(-o "Dir::Etc::SourceList=$WORK/sources.list" -o Dir::Etc::SourceParts=/dev/null
            -o "Dir::State::Lists=$WORK/lists" -o "Dir::Cache=$WORK/cache"
            -o "Dir::State::status=$WORK/status" -o APT::Sandbox::User=root)
  apt-get "${apt_opts[@]}" update -qq
  (cd "$WORK/debs" && apt-get "${apt_opts[@]}" download -qq \
     python2.7 python2.7-minimal libpython2.7-stdlib libpython2.7-minimal \
     python2.7-dev libpython2.7-dev libpython2.7 libssl1.1 libffi7)
  rm -rf "$PREFIX"
  mkdir -p "$PREFIX"
  for deb in "$WORK"/debs/*.deb; do dpkg -x "$deb" "$PREFIX"; done
fi

export LD_LIBRARY_PATH="$PREFIX/usr/lib/x86_64-linux-gnu"
export CFLAGS="-I$PREFIX/usr/include -I$PREFIX/usr/include/python2.7"
py2="$PREFIX/usr/bin/python2.7"
site="$PREFIX/usr/lib/python2.7/dist-packages"   # a real site dir: .pth files work
if ! "$py2" -c 'import autobahntestsuite.wstest' >/dev/null 2>&1; then
  python3 -m pip download -q --no-deps -d "$WORK" pip==20.3.4
  pip2=("$py2" "$WORK/pip-20.3.4-py2.py3-none-any.whl/pip")
  "${pip2[@]}" install -q --no-cache-dir --disable-pip-version-check --target "$site" \
     setuptools==44.1.1 wheel==0.37.1 2>&1 | grep -v DEPRECATION || true
  "${pip2[@]}" install -q --no-cache-dir --disable-pip-version-check --upgrade \
     --target "$site" -r "$REQUIREMENTS" 2>&1 \
     | grep -vE 'DEPRECATION|legacy dependency resolver|requires setuptools==44.0.0' || true
fi
"$py2" -c 'import autobahntestsuite, autobahn; print("wstest ok: autobahntestsuite", autobahntestsuite.__version__, "autobahn", autobahn.__version__)'
