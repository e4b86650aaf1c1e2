# deps.sh - installs the Debian packages kvd needs, if any are missing.
# Sourced by tools/run and tools/test; pass the package lists to kv_deps.

KV_BUILD_DEPS="cmake make gcc pkg-config libuv1-dev node-llhttp libyajl-dev
  liblmdb-dev libxxhash-dev"
KV_TEST_DEPS="python3 curl"

kv_deps() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
      || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "kvd: installing ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -q >&2 || return 1
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q \
    --no-install-recommends "${missing[@]}" >&2
}
