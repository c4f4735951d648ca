#!/usr/bin/env bash
# Builds the Debian package (build/pcopy_<version>_<arch>.deb), installs it with apt-get, and checks
# what a user gets: `pcopy --version` from PATH, `man pcopy`, and bash completing `pcopy --pro` to
# `--progress=`. Exits non-zero on any failure. Installs what it needs (uses sudo when not root).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
# dpkg-dev: dpkg-shlibdeps, which CPack runs to compute Depends; file: CPack needs it for that too;
# man-db: man; bash-completion: the loader that picks completions up by command name.
ensure_packages dpkg-dev file man-db bash-completion

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)

fail() {
  echo "package.sh: FAIL: $*" >&2
  exit 1
}

scripts/build.sh
version=$(sed -n 's/^CMAKE_PROJECT_VERSION:STATIC=//p' build/CMakeCache.txt)
[ -n "$version" ] || fail "cannot read the project version from build/CMakeCache.txt"
arch=$(dpkg --print-architecture)

rm -f build/pcopy_*.deb
(cd build && cpack -G DEB)
deb=build/pcopy_${version}_${arch}.deb
[ -f "$deb" ] || fail "cpack did not produce $deb"
echo "== $deb"
dpkg-deb --info "$deb"
dpkg-deb --contents "$deb"

depends=$(dpkg-deb --field "$deb" Depends)
# Regular expressions: fmt's package carries its soname's number (libfmt9 on Debian 12, libfmt10 on 13).
for lib in libc6 'libstdc\+\+6' 'libfmt[0-9]+' libxxhash0; do
  re=", $lib[ ,]"
  [[ ", $depends," =~ $re ]] || fail "Depends lacks $lib: $depends"
done
[ "$(dpkg-deb --field "$deb" Section)" = utils ] || fail "Section is not utils"

echo "== apt-get install ./$deb"
# --reinstall: a package of the same version from an earlier run is replaced, not kept.
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --reinstall "./$deb"
[ "$(dpkg-query -W -f='${Version}' pcopy)" = "$version" ] || fail "pcopy $version is not installed"

echo "== pcopy --version"
found=$(command -v pcopy) || fail "pcopy is not on PATH ($PATH)"
if [ "$found" != /usr/bin/pcopy ]; then
  echo "package.sh: warning: $found shadows the packaged /usr/bin/pcopy; checking with the system PATH" >&2
  found=$(PATH=/usr/sbin:/usr/bin:/sbin:/bin command -v pcopy) || fail "pcopy is not on the system PATH"
fi
out=$(PATH="$(dirname "$found"):$PATH" pcopy --version) || fail "pcopy --version exited non-zero"
echo "$out"
[[ $out == "pcopy $version "* ]] || fail "pcopy --version printed '$out', expected 'pcopy $version (...)'"
[[ $out != *"test hooks"* ]] || fail "the package was built with the test suite's fault hooks: $out"

echo "== man pcopy"
man -w pcopy || fail "man -w pcopy finds no page"
man -aw pcopy | grep -qx /usr/share/man/man1/pcopy.1.gz || fail "man -w pcopy does not find the packaged page"
rendered=$(MANWIDTH=80 man -P cat pcopy 2>&1) || fail "man pcopy failed: $rendered"
for section in SYNOPSIS DESCRIPTION OPTIONS "EXIT STATUS" ENVIRONMENT EXAMPLES "SEE ALSO"; do
  grep -q "^$section" <<<"$rendered" || fail "man pcopy renders no $section section"
done
grep -q -- "--progress=WHEN" <<<"$rendered" || fail "man pcopy does not describe --progress"

echo "== bash completion of 'pcopy --pro'"
# A fresh bash with bash-completion's loader, which finds the packaged completion by command name.
completed=$(bash --norc --noprofile -c '
  source /usr/share/bash-completion/bash_completion
  if declare -F _comp_load >/dev/null; then _comp_load pcopy; else __load_completion pcopy; fi
  spec=$(complete -p pcopy) || exit 3
  func=$(sed -n "s/.*-F \([^ ]*\).*/\1/p" <<<"$spec")
  COMP_WORDS=(pcopy --pro) COMP_CWORD=1 COMP_LINE="pcopy --pro" COMP_POINT=11
  COMPREPLY=()
  "$func" pcopy --pro pcopy
  printf "%s\n" "${COMPREPLY[@]}"') || fail "bash-completion did not load a completion for pcopy"
echo "$completed"
[ "$completed" = "--progress=" ] || fail "bash completed 'pcopy --pro' to '$completed', expected '--progress='"

echo "package.sh: OK: $deb installs; pcopy --version, man pcopy and bash completion work"
