#!/usr/bin/env bash
# test/fault/snapshot.sh DIR — a private, frozen copy of the PostgreSQL 15 installation with the pix
# extension and shim/pixd as they are now, so that a `make install` or a rebuild by someone else
# during a long run cannot swap pix.so or pixd under the running processes.
#
# PostgreSQL finds $libdir and its share directory relative to the real path of its executable, so
# DIR/usr/lib/postgresql/15/bin holds copies of postgres, pg_ctl, initdb, pg_isready; lib/ and share/
# are symlinks to the system's files except the pix files, which are copies. Prints the bin directory.
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=${1:?usage: snapshot.sh DIR}
PG_CONFIG=${PG_CONFIG:-pg_config}
SYS_BIN=$($PG_CONFIG --bindir)
SYS_LIB=$($PG_CONFIG --pkglibdir)
SYS_SHARE=$($PG_CONFIG --sharedir)

if [[ ! -f "$SYS_LIB/pix.so" ]]; then
    echo "snapshot.sh: pix is not installed; running make install" >&2
    make -s >&2 && make -s install >&2
fi
if [[ ! -x shim/pixd ]]; then
    make -s shim/pixd >&2
fi
rm -rf "$DIR"
BIN=$DIR$SYS_BIN LIB=$DIR$SYS_LIB SHARE=$DIR$SYS_SHARE
mkdir -p "$BIN" "$LIB" "$SHARE/extension"
for b in postgres pg_ctl initdb pg_isready; do
    cp -p "$SYS_BIN/$b" "$BIN/"
done
for f in "$SYS_LIB"/*; do
    [[ "$(basename "$f")" == pix.so ]] || ln -s "$f" "$LIB/"
done
cp -p "$SYS_LIB/pix.so" "$LIB/pix.so"
for f in "$SYS_SHARE"/*; do
    [[ "$(basename "$f")" == extension ]] || ln -s "$f" "$SHARE/"
done
for f in "$SYS_SHARE"/extension/*; do
    case "$(basename "$f")" in
    pix.control | pix--*) cp -p "$f" "$SHARE/extension/" ;;
    *) ln -s "$f" "$SHARE/extension/" ;;
    esac
done
cp -p shim/pixd "$DIR/pixd"
chmod -R a+rX "$DIR"
echo "$BIN"
