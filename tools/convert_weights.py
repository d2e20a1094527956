"""Converts a PyTorch / torchvision checkpoint (.pt/.pth) to a safetensors file that satm loads with no renaming.

  python tools/convert_weights.py IN.pth OUT.safetensors [--arch resnet50] [--map vggface_dag] [--rename OLD=NEW ...]
                                  [--keep-dtype] [--unsafe-pickle] [--bench DIR]

Accepts a plain state_dict, a dict holding one under 'state_dict' / 'model' / 'model_state_dict' / 'net', or (with
--unsafe-pickle, which runs pickled code: only for files you trust) a whole nn.Module. A DataParallel 'module.' prefix
is removed. Floating-point tensors are written as float32 unless --keep-dtype.

--arch A   checks the keys and shapes against A's state_dict (torchvision: vgg16, vgg16_bn, resnet18, resnet50,
           resnet101, inception_v3; CPU-scale: vgg_s, vggbn_s, resnet_s from ref_satm.py). The class count is read from
           the checkpoint's head (fc / classifier.6 / head), so a checkpoint with any number of classes validates;
           inception_v3's AuxLogits is expected when the checkpoint has it. Problems are listed and the exit status is 1.
--map vggface_dag   renames Albanie's VGG-Face port (conv1_1 ... conv5_3, fc6, fc7, fc8) to torchvision vgg16 names
           (features.N, classifier.0/3/6); use it with satm's `norm: "vggface"` (mean 129.186/104.762/93.594 on
           0-255 RGB, no std division).
--rename OLD=NEW   replaces a key prefix (repeatable, applied after --map), e.g. --rename backbone.=.
"""
import argparse, os, sys
import torch

CPU_ARCHS = ("vgg_s", "vggbn_s", "resnet_s")
TV_ARCHS = ("vgg16", "vgg16_bn", "resnet18", "resnet50", "resnet101", "inception_v3")
HEADS = {"fc.weight", "classifier.6.weight", "head.weight"}

VGGFACE_CONVS = ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
                 "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3"]
VGG16_CONV_IDX = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]


def vggface_dag_names():
    m = {c: f"features.{i}" for c, i in zip(VGGFACE_CONVS, VGG16_CONV_IDX)}
    m.update({"fc6": "classifier.0", "fc7": "classifier.3", "fc8": "classifier.6"})
    return m


def load_state_dict(path, unsafe):
    obj = torch.load(path, map_location="cpu", weights_only=not unsafe)
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        for k in ("state_dict", "model_state_dict", "model", "net"):
            if k in obj and isinstance(obj[k], (dict, torch.nn.Module)):
                obj = obj[k]
                obj = obj.state_dict() if isinstance(obj, torch.nn.Module) else obj
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        sys.exit(f"{path}: no state_dict of tensors found (top-level type {type(obj).__name__})")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def rename(sd, mapping, renames):
    out = {}
    for k, v in sd.items():
        if mapping:
            head, _, rest = k.partition(".")
            if head in mapping:
                k = mapping[head] + "." + rest
        for old, new in renames:
            if k.startswith(old):
                k = new + k[len(old):]
        if k in out:
            sys.exit(f"two tensors map to the key {k}")
        out[k] = v
    return out


def reference(arch, sd, bench):
    heads = [k for k in HEADS if k in sd]
    if not heads:
        sys.exit(f"cannot find the classifier head ({', '.join(sorted(HEADS))}) to read the class count")
    classes = sd[heads[0]].shape[0]
    if arch in CPU_ARCHS:
        if bench is None:
            d = os.path.dirname(os.path.abspath(__file__))
            while d != os.path.dirname(d) and not os.path.isfile(os.path.join(d, "shared", "bench", "ref_satm.py")):
                d = os.path.dirname(d)
            bench = os.path.join(d, "shared", "bench")
        sys.path.insert(0, bench)
        from ref_satm import Net
        return {k: v for k, v in Net(arch, classes).state_dict().items() if not k.startswith("da.")}
    import torchvision.models as tvm
    if arch == "inception_v3":
        aux = any(k.startswith("AuxLogits.") for k in sd)
        return tvm.inception_v3(weights=None, num_classes=classes, aux_logits=aux, init_weights=False).state_dict()
    return getattr(tvm, arch)(weights=None, num_classes=classes).state_dict()


def validate(arch, sd, bench):
    ref = reference(arch, sd, bench)
    missing = sorted(set(ref) - set(sd))
    unexpected = sorted(set(sd) - set(ref))
    mismatched = sorted(f"{k} (expected {tuple(ref[k].shape)}, file {tuple(sd[k].shape)})"
                        for k in set(ref) & set(sd) if ref[k].shape != sd[k].shape)
    problems = [(n, v) for n, v in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)) if v]
    for n, v in problems:
        shown = ", ".join(v[:20]) + (f", ... and {len(v) - 20} more" if len(v) > 20 else "")
        print(f"{arch}: {n} {len(v)}: {shown}", file=sys.stderr)
    return not problems


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--arch", choices=CPU_ARCHS + TV_ARCHS)
    p.add_argument("--map", choices=["vggface_dag"])
    p.add_argument("--rename", action="append", default=[], metavar="OLD=NEW")
    p.add_argument("--keep-dtype", action="store_true")
    p.add_argument("--unsafe-pickle", action="store_true", help="allow full pickles (runs code from the file)")
    p.add_argument("--bench", default=None, help="directory of ref_satm.py for the CPU-scale archs")
    a = p.parse_args()
    if not a.output.endswith(".safetensors"):
        sys.exit("the output must end in .safetensors")
    renames = []
    for r in a.rename:
        if "=" not in r:
            sys.exit(f"--rename {r}: expected OLD=NEW")
        renames.append(tuple(r.split("=", 1)))
    sd = load_state_dict(a.input, a.unsafe_pickle)
    sd = rename(sd, vggface_dag_names() if a.map == "vggface_dag" else None, renames)
    if not a.keep_dtype:
        sd = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
    if a.arch and not validate(a.arch, sd, a.bench):
        sys.exit(1)
    from safetensors.torch import save_file
    tmp = a.output + ".tmp"
    save_file({k: v.detach().contiguous() for k, v in sd.items()}, tmp)
    os.replace(tmp, a.output)  # no half-written file at the destination
    n = sum(v.numel() for v in sd.values() if v.is_floating_point())
    print(f"wrote {a.output}: {len(sd)} tensors, {n} floats" + (f", keys match {a.arch}" if a.arch else ""))


if __name__ == "__main__":
    main()
