#!/usr/bin/env bash
# extension/pgindent.sh [file.c|file.h ...]: formats the extension's C in PostgreSQL's layout, as
# PostgreSQL's src/tools/pgindent/pgindent does: pg_bsd_indent (Debian package pg-bsd-indent) with
# pgindent's flags and its pre- and post-processing, and extension/typedefs.list (the extension's
# own typedefs and the PostgreSQL ones it uses). No argument: every .c and .h of extension/.
# A new typedef goes into typedefs.list, or pg_bsd_indent lays out its declarations as expressions.
# pixd (shim/) keeps its own style (.clang-format at the top; extension/.clang-format disables it).
set -euo pipefail
cd "$(dirname "$0")"
INDENT=${PGINDENT:-pg_bsd_indent}
OPTS="-bad -bap -bbb -bc -bl -cli1 -cp33 -cdb -nce -d0 -di12 -nfc1 -i4 -l79 -lp -lpl -nip -npro -sac -tpg -ts4"
if (($# == 0)); then
    set -- *.c *.h
fi
tmp=$(mktemp)
# pg_bsd_indent keeps a backup of its input in the current directory
trap 'rm -f "$tmp" "$(basename "$tmp").BAK"' EXIT
for f in "$@"; do
    f=${f#extension/}
    # pre: // comments become /* */; dash-protected block comments are kept as they are
    perl -0pe 's!^([ \t]*)//(.*)$!$1/* $2 */!gm; s!/\* +---!/*---X_X!g' "$f" >"$tmp"
    # shellcheck disable=SC2086  # OPTS is a list of flags
    if ! "$INDENT" $OPTS -Utypedefs.list "$tmp"; then
        echo "pgindent.sh: $INDENT failed on $f" >&2
        exit 1
    fi
    # post: undo the protection, a tab between run-together comments, "type *" return types
    perl -0pe 's!/\*---X_X!/* ---!g; s!\*/(/\*.*\*/)$!*/\t$1!gm; s!^([A-Za-z_]\S*)[ \t]+\*$!$1 *!gm' \
        "$tmp" >"$f.pgindent"
    if cmp -s "$f" "$f.pgindent"; then rm -f "$f.pgindent"; else mv "$f.pgindent" "$f"; fi
done
