# Shared by scripts/deps and scripts/test-deps (sourced, not run): messages, the supported
# systems, root or sudo, Debian packages and where PostgreSQL's server binaries are.

say() { printf '%s: %s\n' "$script" "$*" >&2; }
die() { printf '%s: error: %s\n' "$script" "$*" >&2; exit 1; }

[[ -r /etc/os-release ]] || die "cannot read /etc/os-release; supported systems are Debian 12+ and Ubuntu 22.04+"
# shellcheck disable=SC1091
. /etc/os-release
case "${ID:-} ${ID_LIKE:-}" in
  *debian*|*ubuntu*) ;;
  *) die "unsupported system '${PRETTY_NAME:-unknown}'; supported are Debian 12+ and Ubuntu 22.04+ (install PostgreSQL 15+ server binaries by hand elsewhere)" ;;
esac

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || die "not root and no sudo: run $script as root"
  SUDO="sudo"
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Installs Debian packages (deduplicated), refreshing the package lists at most every 12 hours.
apt_install() {
  (($#)) || return 0
  local pkgs
  mapfile -t pkgs < <(printf '%s\n' "$@" | awk '!seen[$0]++')
  say "installing Debian packages: ${pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  local stamp=/var/lib/apt/periodic/bulkhead-update-stamp
  if [[ ! -e $stamp ]] || [[ -n $(find "$stamp" -mmin +720 2>/dev/null) ]]; then
    $SUDO apt-get update -qq || die "apt-get update failed"
    $SUDO mkdir -p "$(dirname "$stamp")" && $SUDO touch "$stamp"
  fi
  $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null \
    || die "apt-get install ${pkgs[*]} failed"
}

# Prints the newest PostgreSQL 15+ server binary directory, or nothing.
pg_bin() {
  local v
  for v in 17 16 15; do
    if [[ -x /usr/lib/postgresql/$v/bin/initdb && -x /usr/lib/postgresql/$v/bin/postgres ]]; then
      echo "/usr/lib/postgresql/$v/bin"
      return
    fi
  done
}
