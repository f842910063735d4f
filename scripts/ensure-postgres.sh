# Sourced by scripts/test: the test suite runs a real PostgreSQL server, installed from Debian's
# packages when this machine has none.
have_postgres() {
  command -v initdb >/dev/null 2>&1 && return 0
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}
if ! have_postgres; then
  echo "installing PostgreSQL from Debian's packages (the tests run a real server)" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi
