# Sourced by .ci/run and examples/reproduce: install the Debian packages a command needs.

# Prints the command, then runs it: logs show exactly what ran.
run() {
  printf '+ %s\n' "$*"
  "$@"
}

# ensure_packages PKG...: installs the Debian packages that are not installed yet. Fast when all
# are there: dpkg-query only, no apt-get.
ensure_packages() {
  if ! command -v dpkg-query > /dev/null 2>&1; then
    echo "not a Debian system: make sure these are installed: $*" >&2
    return 0
  fi
  local missing=() pkg
  for pkg in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2> /dev/null | grep -q 'install ok installed'; then
      missing+=("$pkg")
    fi
  done
  if ((${#missing[@]} == 0)); then
    return 0
  fi
  printf '\n==> installing %s\n' "${missing[*]}"
  local sudo=()
  if ((EUID != 0)); then
    if command -v sudo > /dev/null 2>&1; then
      sudo=(sudo)
    else
      echo "missing packages ${missing[*]}: run as root, or install them" >&2
      return 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  run "${sudo[@]}" apt-get update
  run "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
}
