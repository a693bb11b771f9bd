#!/usr/bin/env bash
# Builds the Debian package with cargo-deb (metadata: [package.metadata.deb] in Cargo.toml),
# installs it with dpkg, checks what it installed with the installed tools (`hookgate check` on
# /etc/hookgate/gateway.yaml, `systemd-analyze verify` on the unit, `man` on the page), then
# purges it. Run as root on a Debian machine, from anywhere:
#
#   scripts/deb-check.sh            # leaves the .deb in target/debian/
#
# Cost: a release build (about 3 minutes on 2 cores, from scratch) plus, the first time,
# `cargo install cargo-deb` (about 2 minutes). It refuses to run where a hookgate package is
# already installed, so it never removes an operator's installation.
set -euo pipefail
cd "$(dirname "$0")/.."

if dpkg-query -W -f='${Status}' hookgate 2>/dev/null | grep -q "install ok"; then
  echo "deb-check: a hookgate package is installed here already; not touching it" >&2
  exit 1
fi

echo "== cargo-deb"
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked
cargo deb --version

echo "== release build, man pages, completions"
cargo build --release --locked
rm -rf target/assets
mkdir -p target/assets/man target/assets/completions
target/release/hookgate man --dir target/assets/man
target/release/hookgate completions bash > target/assets/completions/hookgate.bash
target/release/hookgate completions zsh > target/assets/completions/_hookgate
target/release/hookgate completions fish > target/assets/completions/hookgate.fish

echo "== cargo deb"
deb=$(cargo deb --no-build --locked | tail -1)
test -f "$deb"
echo "$deb"
dpkg-deb --info "$deb"
dpkg-deb --contents "$deb"

echo "== install"
cleanup() { dpkg --purge hookgate >/dev/null 2>&1 || true; }
trap cleanup EXIT
dpkg -i "$deb"
dpkg -L hookgate

echo "== the installed files"
/usr/bin/hookgate version
test -f /etc/hookgate/gateway.yaml
dpkg-query -W -f='${Conffiles}\n' hookgate | grep -q /etc/hookgate/gateway.yaml
# The example config names its secret as ${GITHUB_WEBHOOK_SECRET}, which the unit reads from
# /etc/hookgate/hookgate.env: without it the check fails (never fail open), with it it passes.
if env -u GITHUB_WEBHOOK_SECRET /usr/bin/hookgate check -c /etc/hookgate/gateway.yaml; then
  echo "deb-check: the installed config passed without its secret" >&2
  exit 1
fi
GITHUB_WEBHOOK_SECRET=deb-check /usr/bin/hookgate check -c /etc/hookgate/gateway.yaml
unit=$(dpkg -L hookgate | grep '/hookgate.service$')
test -f "$unit"
if [ -x /usr/bin/systemd-analyze ]; then
  systemd-analyze verify --man=no "$unit"
  systemd-analyze security --offline=true --threshold=49 --no-pager "$unit" | tail -1
fi
test -f /usr/share/man/man1/hookgate.1* && test -f /usr/share/man/man1/hookgate-run.1*
test -f /usr/share/bash-completion/completions/hookgate
bash -n /usr/share/bash-completion/completions/hookgate
test -f /usr/share/hookgate/gateway.schema.json

echo "== remove"
dpkg --purge hookgate
trap - EXIT
test ! -e /usr/bin/hookgate
test ! -e /etc/hookgate/gateway.yaml
echo "deb-check: ok ($deb)"
