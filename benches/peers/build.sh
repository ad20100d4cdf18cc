#!/usr/bin/env bash
# Builds the peers wshub is benchmarked against, from the package registries only, into
# benches/peers/build/ (gitignored):
#
#   gorilla  gorilla/websocket's examples/chat hub in Go: Debian's golang-go and
#            golang-github-gorilla-websocket-dev (the library, used in GOPATH mode, offline);
#            the example's source comes from Debian's source package of the same version
#            (the binary package ships no examples), checked against the SHA-256 in its
#            signed .dsc. Nothing of gorilla's is committed here.
#   node     Node's ws (npm), benches/peers/node-ws/server.js
#   python   Python's websockets (PyPI) in a venv, benches/peers/python-websockets/server.py,
#            plus matplotlib for benches/run.py's chart
#   axum     the do-it-yourself Rust baseline, benches/peers/axum-broadcast (its own crate,
#            outside the wshub workspace)
#
# Usage: benches/peers/build.sh [gorilla] [node] [python] [axum]   (no argument: all)
# Every peer ends up as an executable under benches/peers/build/bin/ taking one argument,
# the address to serve (e.g. 127.0.0.1:8080), on path /ws.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
build="$here/build"
bin="$build/bin"
mkdir -p "$bin"

peers=("$@")
[ ${#peers[@]} -eq 0 ] && peers=(gorilla node python axum)

# Debian's source of the gorilla/websocket version packaged as golang-github-gorilla-websocket-dev.
gorilla_version="1.5.0"
gorilla_orig="golang-github-gorilla-websocket_${gorilla_version}.orig.tar.gz"
gorilla_orig_sha256="5d86f9e1c76ff7ceca0747f78b79864fbaec9d440f4fdb03197466e5102a86b0"
gorilla_pool="http://deb.debian.org/debian/pool/main/g/golang-github-gorilla-websocket"

build_gorilla() {
    if ! dpkg -s golang-go golang-github-gorilla-websocket-dev >/dev/null 2>&1; then
        echo "== installing golang-go golang-github-gorilla-websocket-dev (apt)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q golang-go golang-github-gorilla-websocket-dev
    fi
    local installed
    installed="$(dpkg-query -W -f='${Version}' golang-github-gorilla-websocket-dev)"
    if [ "${installed%%-*}" != "$gorilla_version" ]; then
        echo "golang-github-gorilla-websocket-dev is $installed; build.sh pins $gorilla_version: update the pin" >&2
        return 1
    fi
    local dir="$build/gorilla-chat"
    mkdir -p "$dir"
    if [ ! -f "$dir/$gorilla_orig" ]; then
        echo "== downloading $gorilla_orig from Debian"
        curl -fsS --max-time 120 -o "$dir/$gorilla_orig.part" "$gorilla_pool/$gorilla_orig"
        mv "$dir/$gorilla_orig.part" "$dir/$gorilla_orig"
    fi
    echo "$gorilla_orig_sha256  $dir/$gorilla_orig" | sha256sum -c --quiet
    rm -rf "$dir/src"
    mkdir -p "$dir/src"
    tar -xzf "$dir/$gorilla_orig" -C "$dir/src" --strip-components=3 "websocket-$gorilla_version/examples/chat"
    # The example caps incoming messages at 512 bytes (maxMessageSize) and would close the
    # sender of the 1 KiB runs; a user serving bigger messages raises it, so do we. Nothing
    # else changes.
    sed -i 's/maxMessageSize = 512$/maxMessageSize = 4096/' "$dir/src/client.go"
    grep -q 'maxMessageSize = 4096' "$dir/src/client.go"
    echo "== building gorilla chat (GOPATH mode against /usr/share/gocode, offline)"
    (cd "$dir/src" && GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= GOPROXY=off \
        GOCACHE="$build/go-cache" go build -o "$bin/gorilla-chat" .)
    # The example serves home.html from its working directory on "/"; /ws does not need it.
    cat > "$bin/gorilla" <<WRAP
#!/bin/sh
cd "$dir/src" && exec "$bin/gorilla-chat" -addr "\$1"
WRAP
    chmod +x "$bin/gorilla"
}

build_node() {
    echo "== installing ws (npm)"
    (cd "$here/node-ws" && if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi)
    cat > "$bin/node-ws" <<WRAP
#!/bin/sh
exec node "$here/node-ws/server.js" "\$1"
WRAP
    chmod +x "$bin/node-ws"
}

build_python() {
    echo "== installing websockets and matplotlib into $build/venv (PyPI)"
    [ -x "$build/venv/bin/python" ] || python3 -m venv "$build/venv"
    "$build/venv/bin/pip" install -q -r "$here/python-websockets/requirements.txt" -r "$here/../requirements.txt"
    cat > "$bin/python-websockets" <<WRAP
#!/bin/sh
exec "$build/venv/bin/python" "$here/python-websockets/server.py" "\$1"
WRAP
    chmod +x "$bin/python-websockets"
}

build_axum() {
    echo "== building axum-broadcast (crates.io)"
    local target="${CARGO_TARGET_DIR:-$build/target}"
    local locked=()
    [ -f "$here/axum-broadcast/Cargo.lock" ] && locked=(--locked)
    CARGO_TARGET_DIR="$target" cargo build --release "${locked[@]}" \
        --manifest-path "$here/axum-broadcast/Cargo.toml"
    cp "$target/release/axum-broadcast" "$bin/axum-broadcast"
}

for peer in "${peers[@]}"; do
    case "$peer" in
        gorilla) build_gorilla ;;
        node) build_node ;;
        python) build_python ;;
        axum) build_axum ;;
        *) echo "unknown peer $peer (gorilla, node, python, axum)" >&2; exit 2 ;;
    esac
done
echo "== peers in $bin:"
ls "$bin"
