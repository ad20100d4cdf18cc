# shellcheck shell=bash disable=SC2034  # sets variables for the scripts that source it
# Shared by scripts/autobahn.sh (the server under test) and scripts/autobahn-client.sh (the
# client under test): arguments, the run's time budget, and installing and running wstest.
# Sourced, not run; expects ROOT and a NAME for messages.

# autobahn_args ARGS...: sets `record` (0/1) and `groups` (default 1 to 11).
autobahn_args() {
  record=0
  groups=()
  local arg
  for arg in "$@"; do
    case "$arg" in
      --record) record=1 ;;
      *)
        if [[ "$arg" =~ ^[0-9]+$ ]] && (( arg >= 1 && arg <= 13 )); then
          groups+=("$arg")
        else
          echo "$NAME: '$arg' is not a case group (1 to 13) nor --record" >&2
          exit 2
        fi ;;
    esac
  done
  (( ${#groups[@]} )) || groups=(1 2 3 4 5 6 7 8 9 10 11)
}

# The whole run gets AUTOBAHN_TIMEOUT seconds (1800 by default); `remaining` prints what is
# left of them and ends the run when nothing is.
timeout_s="${AUTOBAHN_TIMEOUT:-1800}"
deadline=$(( SECONDS + timeout_s ))
remaining() {
  local left=$(( deadline - SECONDS ))
  if (( left <= 0 )); then
    echo "$NAME: the run's budget of ${timeout_s}s (AUTOBAHN_TIMEOUT) is spent" >&2
    exit 1
  fi
  echo "$left"
}

# autobahn_install: installs wstest when needed (the shared TestSuite beside the repository,
# else scripts/autobahn-setup.sh with the same pins) and sets the `wstest` command array.
autobahn_install() {
  export AUTOBAHN_HOME="${AUTOBAHN_HOME:-$HOME/.cache/autobahn-py27}"
  local shared_dir="${AUTOBAHN_DIR:-$ROOT/../shared/autobahn}" setup
  if [ -x "$shared_dir/setup.sh" ]; then
    setup="$shared_dir/setup.sh"
  else
    echo "$NAME: no $shared_dir; installing wstest with scripts/autobahn-setup.sh"
    setup="$ROOT/scripts/autobahn-setup.sh"
  fi
  timeout -k 10 "$(remaining)" "$setup"
  local ld_path="$AUTOBAHN_HOME/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  wstest=(env -u PYTHONPATH -u PYTHONHOME "LD_LIBRARY_PATH=$ld_path"
          "$AUTOBAHN_HOME/usr/bin/python2.7" -c
          'import sys; sys.argv[0]="wstest"; from autobahntestsuite.wstest import run; run()')
}

# autobahn_cases_json: the `cases` list of a wstest spec for the chosen groups.
autobahn_cases_json() {
  local cases
  cases=$(printf '"%s.*",' "${groups[@]}")
  echo "[${cases%,}]"
}
