#!/usr/bin/env bash
# Installs faasd as a systemd service on this machine (run as root):
# binaries in /usr/local/bin, the unit, /etc/faasd/faasd.toml (kept if it
# exists), the faasd group (its members may use the control socket), the
# faas man page and bash completion; then starts it where systemd runs.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
scripts/install-deps.sh
cargo build --release --quiet --bins
handlers=$(scripts/build-handlers.sh)
install -m 0755 target/release/faasd target/release/faas /usr/local/bin/
install -m 0755 "$handlers/faas-init" /usr/local/bin/faas-init
install -D -m 0644 dist/faasd.service /etc/systemd/system/faasd.service
[ -e /etc/faasd/faasd.toml ] || install -D -m 0644 dist/faasd.toml /etc/faasd/faasd.toml
getent group faasd >/dev/null || groupadd --system faasd
install -d /usr/local/share/man/man1
/usr/local/bin/faas man > /usr/local/share/man/man1/faas.1
install -d /usr/share/bash-completion/completions
/usr/local/bin/faas completion bash > /usr/share/bash-completion/completions/faas
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable --now faasd
    echo "faasd is running: systemctl status faasd; faas list"
else
    echo "installed; systemd is not running here, so start it yourself: /usr/local/bin/faasd &"
fi
