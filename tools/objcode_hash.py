"""Static fingerprint of an object file's functions: per function, its instruction count and a hash
of its instructions with addresses and relocation targets blanked (so code that merely moved hashes
the same). Used by tools/callgrind_bench.sh (HASH=1) where valgrind cannot run a variant (valgrind
3.19 has no AVX-512): equal hashes show a change left that variant's code unchanged.

    python tools/objcode_hash.py schedule_avx512.o [FILTER]
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys


def functions(obj: str):
    out = subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", "-r", obj], capture_output=True, text=True,
                         check=True).stdout
    current, body = None, []
    for line in out.splitlines():
        head = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if head:
            if current is not None:
                yield current, body
            current, body = head.group(1), []
            continue
        ins = re.match(r"^\s+[0-9a-f]+:\s+(.*)$", line)
        if current is not None and ins:
            text = re.sub(r"\b[0-9a-f]+ <[^>]*>", "<addr>", ins.group(1))  # jump / call targets
            text = re.sub(r"#.*$", "", text).strip()
            body.append(text)
        elif current is not None and re.match(r"^\s+[0-9a-f]+: R_", line):
            rel = re.sub(r"^\s+[0-9a-f]+:\s+", "", line).strip()
            # relocation kind and symbol, without the addend and the numbering of local constants
            # (.LC12+0x40: constants that moved in .rodata are not a code change)
            rel = re.sub(r"[-+]0x[0-9a-f]+$", "", re.sub(r"\.LC\d+", ".LC", rel))
            body.append(rel)
    if current is not None:
        yield current, body


def main() -> None:
    obj = sys.argv[1]
    flt = sys.argv[2] if len(sys.argv) > 2 else ""
    for name, body in functions(obj):
        if flt in name:
            digest = hashlib.sha1("\n".join(body).encode()).hexdigest()[:12]
            print(f"{name[:150]} {len(body):6d} {digest}")


if __name__ == "__main__":
    main()
