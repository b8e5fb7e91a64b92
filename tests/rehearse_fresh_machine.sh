#!/usr/bin/env bash
# Rehearse a fresh machine: what a new user gets from README's test command on a machine that has
# never run the suite.
#
#   1. purge every peer package the suite installs (Postfix, Dovecot and its services, Pigeonhole,
#      Prometheus, swaks, ...) and delete the system users and groups they and the tests created;
#   2. clone the repository afresh and make a new virtual environment;
#   3. run README's test command there, exactly as README spells it, with CI=true (a skipped root
#      test is then a failure).
#
# It changes this machine for real (packages, users), so it runs as root and only with --yes.
#
#   tests/rehearse_fresh_machine.sh --yes [REPOSITORY [REVISION]]
#
# REPOSITORY defaults to this checkout, REVISION to its HEAD (commit first: the work tree is not
# copied). The last line printed is pytest's summary; the exit code is the test command's.
set -euo pipefail

# What the suite installs from the distribution (tests/peers/programs.py), and what those packages
# pull in that a fresh machine lacks. PostgreSQL is not here: a new machine of the project's kind has it.
PEER_PACKAGES=(
  postfix
  dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd dovecot-sieve dovecot-managesieved
  prometheus
  swaks
  fail2ban
  mariadb-server mariadb-client
  slapd ldap-utils
)
# Accounts made by the tests (vmail, mdatest) and by the peer packages' install scripts.
PEER_USERS=(vmail mdatest postfix dovecot dovenull prometheus mysql openldap)
PEER_GROUPS=(vmail mdatest postfix postdrop dovecot dovenull prometheus mysql openldap)

here=$(cd "$(dirname "$0")/.." && pwd)
if [[ ${1:-} != --yes ]]; then
  echo "usage: $0 --yes [REPOSITORY [REVISION]]   (purges ${PEER_PACKAGES[*]} and deletes users)" >&2
  exit 2
fi
shift
repository=${1:-$here}
revision=${2:-$(git -C "$here" rev-parse HEAD)}
if [[ $(id -u) -ne 0 ]]; then
  echo "$0: must run as root (it purges packages; the suite's root tests need root too)" >&2
  exit 2
fi

echo "== purging peer packages"
export DEBIAN_FRONTEND=noninteractive
installed=()
for package in "${PEER_PACKAGES[@]}"; do
  # dpkg "knows" packages it has never installed: only "install ok installed" is on disk.
  if [[ $(dpkg-query -W -f='${Status}' "$package" 2>/dev/null) == "install ok installed" ]]; then
    installed+=("$package")
  fi
done
if ((${#installed[@]})); then
  apt-get -o DPkg::Lock::Timeout=600 purge -y -q "${installed[@]}" >/dev/null
  apt-get -o DPkg::Lock::Timeout=600 autoremove --purge -y -q >/dev/null
fi
for user in "${PEER_USERS[@]}"; do
  if getent passwd "$user" >/dev/null; then userdel "$user"; fi
done
for group in "${PEER_GROUPS[@]}"; do
  if getent group "$group" >/dev/null; then groupdel "$group"; fi
done
for program in postfix dovecot sieve-test promtool prometheus swaks smtp-source fail2ban-regex mariadbd slapd; do
  if command -v "$program" >/dev/null; then
    echo "$0: $program is still installed after the purge" >&2
    exit 1
  fi
done

work=$(mktemp -d /tmp/mda-fresh-XXXXXX)
echo "== fresh clone of $repository at $revision in $work"
git clone --quiet "$repository" "$work/mda"
git -C "$work/mda" checkout --quiet "$revision"
python3 -m venv "$work/venv"
# shellcheck disable=SC1091
source "$work/venv/bin/activate"
cd "$work/mda"

test_command=$(grep -m1 -x "pip install -e '.\[test\]' && python -m pytest" README.md || true)
if [[ -z $test_command ]]; then
  echo "$0: README.md no longer shows the test command this script runs" >&2
  exit 1
fi
echo "== CI=true $test_command"
status=0
CI=true bash -c "$test_command" 2>&1 | tee "$work/test.log" || status=$?
echo "== log: $work/test.log"
tail -n 1 "$work/test.log"
exit "$status"
