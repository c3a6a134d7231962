#!/bin/bash
# The documentation: every relative link in README.md and docs/*.md
# resolves to a file or directory of the source tree, and a link with a
# #fragment to a heading of its target file (GitHub's anchors: lower case,
# punctuation dropped, spaces to '-', a repeated heading gets -1, -2, ...).
# README.md is the front door: at most 12288 bytes. The checker is first
# run on a tree with a broken link, a broken anchor and a missing file, and
# must find exactly those three, so this test cannot pass by finding nothing.
set -u
S=${XG_SRCDIR:-.}
PY=${PYTHON3:-python3}
fail() { echo "FAIL: $*"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cat > "$tmp/check.py" <<'PYEOF'
import os, re, sys

FENCE = re.compile(r'^\s*(```|~~~)')
HEAD = re.compile(r'^(#{1,6})\s+(.*?)\s*#*\s*$')
INLINE = re.compile(r'!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)')
REFDEF = re.compile(r'^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$')
CODESPAN = re.compile(r'(`+).*?\1')

def lines_outside_code(path):
    fence = False
    with open(path, encoding='utf-8') as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip('\n')
            if FENCE.match(line):
                fence = not fence
                continue
            if not fence:
                yield n, line

def slug(text):
    text = re.sub(r'!?\[([^\]]*)\]\([^)]*\)', r'\1', text)  # links: their text
    text = re.sub(r'<[^>]+>', '', text)                     # inline html
    text = text.strip().lower()
    text = re.sub(r'[^\w\- ]', '', text)
    return text.replace(' ', '-')

def anchors(path):
    seen, out = {}, set()
    for _, line in lines_outside_code(path):
        m = HEAD.match(line)
        if not m:
            continue
        s = slug(m.group(2))
        k = seen.get(s, 0)
        seen[s] = k + 1
        out.add(s if k == 0 else '%s-%d' % (s, k))
    for _, line in lines_outside_code(path):
        for m in re.finditer(r'<a\s+(?:name|id)="([^"]+)"', line):
            out.add(m.group(1))
    return out

def check(root, files, limit):
    errors, cache, nlinks = [], {}, 0
    for rel in files:
        path = os.path.join(root, rel)
        for n, line in lines_outside_code(path):
            bare = CODESPAN.sub('', line)
            targets = [m.group(1) for m in INLINE.finditer(bare)]
            m = REFDEF.match(bare)
            if m:
                targets.append(m.group(1))
            for t in targets:
                if re.match(r'^[a-zA-Z][a-zA-Z0-9+.-]*:', t) or t.startswith('//'):
                    continue                      # absolute: http:, mailto:
                nlinks += 1
                file, _, frag = t.partition('#')
                dest = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
                where = '%s:%d: link %s' % (rel, n, t)
                if not os.path.exists(dest):
                    errors.append('%s: no file %s' % (where, os.path.relpath(dest, root)))
                    continue
                if frag:
                    if os.path.isdir(dest):
                        errors.append('%s: an anchor into a directory' % where)
                        continue
                    if dest not in cache:
                        cache[dest] = anchors(dest)
                    if frag not in cache[dest]:
                        errors.append('%s: no heading #%s in %s' % (where, frag, os.path.relpath(dest, root)))
    size = os.path.getsize(os.path.join(root, 'README.md'))
    if size > limit:
        errors.append('README.md: %d bytes, more than %d' % (size, limit))
    return errors, nlinks

root = sys.argv[1]
files = ['README.md'] + sorted('docs/' + f for f in os.listdir(os.path.join(root, 'docs')) if f.endswith('.md'))
errors, nlinks = check(root, files, 12288)
for e in errors:
    print(e)
print('%d files, %d relative links, %d errors' % (len(files), nlinks, len(errors)))
sys.exit(1 if errors else 0)
PYEOF

# 1. the checker finds what is broken: a missing file, a missing heading,
# and a broken link in docs/; not a link in code, not a good anchor
mkdir -p "$tmp/bad/docs"
cat > "$tmp/bad/README.md" <<'MDEOF'
# Title
See [a](docs/a.md#the-gateway-fan-out), [b](docs/a.md#not-there),
[c](docs/missing.md) and `[d](not-a-link.md)`.
```
[e](in-a-fence.md)
```
MDEOF
cat > "$tmp/bad/docs/a.md" <<'MDEOF'
# The gateway: fan-out
Back to [the top](../README.md#title), and [gone](../nowhere.md).
MDEOF
"$PY" "$tmp/check.py" "$tmp/bad" > "$tmp/bad.out" 2>&1
[ $? -eq 1 ] || fail "checker passed a broken tree: $(cat "$tmp/bad.out")"
grep -q '^README.md:2: link docs/a.md#not-there: no heading' "$tmp/bad.out" \
    || fail "broken anchor not found: $(cat "$tmp/bad.out")"
grep -q '^README.md:3: link docs/missing.md: no file' "$tmp/bad.out" \
    || fail "missing file not found: $(cat "$tmp/bad.out")"
grep -q '^docs/a.md:2: link ../nowhere.md: no file' "$tmp/bad.out" \
    || fail "broken link in docs/ not found: $(cat "$tmp/bad.out")"
grep -q '3 errors' "$tmp/bad.out" \
    || fail "not exactly three errors: $(cat "$tmp/bad.out")"
# and the size limit
head -c 12289 /dev/zero | tr '\0' x > "$tmp/bad/README.md"
"$PY" "$tmp/check.py" "$tmp/bad" > "$tmp/bad.out" 2>&1
grep -q '12289 bytes, more than 12288' "$tmp/bad.out" \
    || fail "size limit not enforced: $(cat "$tmp/bad.out")"

# 2. the real tree
"$PY" "$tmp/check.py" "$S" || fail "broken links or README too large (above)"

# 3. the README's conf is valid, with the env vars the README names
X=${XG_BUILDDIR:-.}/src/exgate
awk '/^<!-- conf:/ { on = 1; next } on && /^```/ { if (n++) exit; next } on' \
    "$S/README.md" > "$tmp/readme.conf"
grep -q 'wss://test.deribit.com/ws/api/v2' "$tmp/readme.conf" \
    || fail "no testnet conf after the <!-- conf: --> marker in README.md"
for v in DERIBIT_CLIENT_ID DERIBIT_CLIENT_SECRET BOT_1_SECRET; do
    grep -q "env:$v" "$tmp/readme.conf" || fail "README conf does not use env:$v"
done
env DERIBIT_CLIENT_ID=id DERIBIT_CLIENT_SECRET=s BOT_1_SECRET=b \
    "$X" -t -c "$tmp/readme.conf" || fail "exgate -t refuses the README conf"
echo "ok"
