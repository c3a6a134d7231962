#!/bin/bash
# The manual pages: man/exgate.8 and man/exgate.conf.5 are clean for
# `mandoc -Tlint` (warnings and style; only the cross-references to pages
# not installed on this machine are let through), and the directives of
# exgate.conf(5) are those of the code's directive tables, both ways and
# each in its context (t/unit/list_directives prints them). The EXAMPLES
# configuration of exgate.conf(5) passes `exgate -t`.
set -u
B=${XG_BUILDDIR:-.}
S=${XG_SRCDIR:-.}
X=$B/src/exgate
L=$B/t/unit/list_directives
fail() { echo "FAIL: $*"; exit 1; }

if ! command -v mandoc >/dev/null 2>&1; then
    echo "SKIP: mandoc is not installed (apt-get install mandoc)"
    exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pages="$S/man/exgate.8 $S/man/exgate.conf.5"

# 1. lint: nothing at warning level, nothing at style level but the
# references to other pages (exgate(8) <-> exgate.conf(5), not installed)
mandoc -Tlint -W warning $pages > "$tmp/lint" 2>&1 \
    || fail "mandoc -Tlint -W warning: $(cat "$tmp/lint")"
[ -s "$tmp/lint" ] && fail "mandoc -Tlint -W warning: $(cat "$tmp/lint")"
mandoc -Tlint -W style $pages 2>&1 \
    | grep -v -e 'referenced manual not found' -e 'mandoc.db' > "$tmp/style"
[ -s "$tmp/style" ] && fail "mandoc -Tlint -W style: $(cat "$tmp/style")"

# 2. the directives: "CONTEXT NAME" from the tables, and from the page
# each ".It Ic NAME" under the latest `.\" context: CONTEXT` comment
"$L" | sort -u > "$tmp/code" || fail "list_directives"
[ -s "$tmp/code" ] || fail "list_directives printed nothing"
awk '
    /^\.\\" context: / { ctx = $3; depth = 0; next }
    ctx != "" && /^\.Bl / { depth++; next }
    ctx != "" && /^\.El/ { if (--depth == 0) ctx = ""; next }
    ctx != "" && depth == 1 && /^\.It Ic / { print ctx, $3 }
' "$S/man/exgate.conf.5" | sort > "$tmp/page.all"
sort -u "$tmp/page.all" > "$tmp/page"
dups=$(uniq -d "$tmp/page.all")
[ -z "$dups" ] || fail "exgate.conf(5) lists twice: $dups"
missing=$(comm -23 "$tmp/code" "$tmp/page")
extra=$(comm -13 "$tmp/code" "$tmp/page")
[ -z "$missing" ] || fail "exgate.conf(5) lacks (context name): $missing"
[ -z "$extra" ] || fail "exgate.conf(5) lists what the code does not have: $extra"
echo "exgate.conf(5) lists the $(wc -l < "$tmp/code") directives of the tables"

# 3. the page's example configuration is valid
awk '/^\.Sh EXAMPLES/ { ex = 1 } ex && /^\.Bd -literal/ { on = 1; next }
     on && /^\.Ed/ { exit } on { print }' "$S/man/exgate.conf.5" > "$tmp/example.conf"
[ -s "$tmp/example.conf" ] || fail "no example in exgate.conf(5)"
out=$(DERIBIT_CLIENT_ID=id DERIBIT_CLIENT_SECRET=s BOT_MM_SECRET=s \
    $X -t -c "$tmp/example.conf" 2>&1) || fail "the example of exgate.conf(5): $out"
echo "PASS"
