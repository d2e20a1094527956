"""Makes torch-sys's C++ wrapper (written for one libtorch) compile against an older libtorch.

usage: patch_torch_sys.py NEW_GENERATED_CPP REF_GENERATED_CPP OUT_CPP LIBTORCH_VERSION

NEW_GENERATED_CPP is libtch/torch_api_generated.cpp of the torch-sys satm uses (0.26, for libtorch 2.13);
REF_GENERATED_CPP the same file of the torch-sys release written for LIBTORCH_VERSION (0.24 for 2.11). Every wrapper
function whose text is in the reference file compiled against that libtorch and is kept as it is; every other one (an
op that libtorch gained or changed after LIBTORCH_VERSION) keeps its signature, so that tch still links, but its body
raises "not available in libtorch LIBTORCH_VERSION" as a Rust error if it is ever called. Prints the functions
replaced, one per line, after a count.
"""
import re
import sys

FUNC = re.compile(r"^(?P<ret>[A-Za-z_][\w ]*?\**)\s*(?P<name>atg_\w+)\((?P<args>[^)]*)\)\s*\{\n.*?^\}\n", re.S | re.M)


def functions(text):
    return {m.group("name"): m for m in FUNC.finditer(text)}


def stub(m, version):
    ret = m.group("ret").strip()
    msg = f'{m.group("name")}: not available in libtorch {version} (satm\'s device build)'
    body = f'  PROTECT(throw std::runtime_error("{msg}");)\n'
    if ret != "void":
        body += "  return nullptr;\n" if ret.endswith("*") or ret == "tensor" else "  return 0;\n"
    return f'{m.group("ret")} {m.group("name")}({m.group("args")}) {{\n{body}}}\n'


def main():
    new_path, ref_path, out_path, version = sys.argv[1:5]
    new = open(new_path).read()
    ref_texts = {m.group(0) for m in functions(open(ref_path).read()).values()}
    found = functions(new)
    if len(found) < 1000:
        raise SystemExit(f"{new_path}: found only {len(found)} wrapper functions; is this torch_api_generated.cpp?")
    replaced = []

    def sub(m):
        if m.group(0) in ref_texts:
            return m.group(0)
        replaced.append(m.group("name"))
        return stub(m, version)

    out = FUNC.sub(sub, new)
    if "#include <stdexcept>" not in out:
        out = "#include <stdexcept>\n" + out
    open(out_path, "w").write(out)
    print(f"{len(replaced)} of {len(found)} wrapper functions are not in libtorch {version}'s torch-sys and raise if called:")
    for n in replaced:
        print(n)


if __name__ == "__main__":
    main()
