"""Exports a PyTorch reference for satm's model cross-checks (tests/models.rs).

Builds ARCH in PyTorch with random weights (random biases and BN affines; BN running statistics from one
training-mode batch, so eval-mode BN is exercised and activations stay O(1)), runs it in eval mode on a random
input, and writes to OUT:
  weights.safetensors  the model's state_dict (ref_satm.py's `da` head excluded), as satm loads it
  da.safetensors       the DA head's weights (ref_satm archs only), names `da.0.weight` ...
  io.safetensors       x [B,3,S,S] in [0,1], logits [B,C], features [B,F], da [B,1] (ref_satm archs only),
                       aux [B,C] (inception_v3 --aux: AuxLogits on Mixed_6e's output, eval mode)
  train_state.safetensors  (ref_satm archs with BN) running statistics and counters after one training-mode
                       forward on x; io's train_logits is that forward's output
  meta.json            arch, classes, size, param_count (sum of p.numel()), feature_dim
Usage: python export_pytorch_ref.py --arch resnet18 --classes 5 --size 64 --batch 2 --out DIR [--bench DIR] [--aux]
       python export_pytorch_ref.py --many vgg_s:8:32:2,inception_v3:6:299:1:aux --out DIR   (into DIR/<arch>/)
CPU-scale archs (vgg_s, vggbn_s, resnet_s) come from ref_satm.py in --bench (../shared/bench by default).
"""
import argparse, json, os, sys
import torch, torch.nn as nn
from safetensors.torch import save_file

CPU_ARCHS = ("vgg_s", "vggbn_s", "resnet_s")


def build(arch, classes, bench, aux):
    if arch in CPU_ARCHS:
        sys.path.insert(0, bench)
        from ref_satm import Net
        return Net(arch, classes)
    import torchvision.models as tvm
    if arch == "inception_v3":
        return tvm.inception_v3(weights=None, num_classes=classes, aux_logits=aux, init_weights=False, transform_input=False)
    return getattr(tvm, arch)(weights=None, num_classes=classes)


def features(net, arch, x):
    """The vector satm's features() returns: ref_satm `features`, VGG classifier[:-1], ResNet/Inception pre-fc."""
    if arch in CPU_ARCHS:
        return net.features(x)
    if arch.startswith("vgg"):
        h = torch.flatten(net.avgpool(net.features(x)), 1)
        return net.classifier[:-1](h)
    fc, net.fc = net.fc, nn.Identity()
    try:
        return net(x)
    finally:
        net.fc = fc


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arch")
    p.add_argument("--classes", type=int, default=5)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--aux", action="store_true", help="inception_v3 with AuxLogits")
    p.add_argument("--many", default=None,
                   help="several exports in one process (saves torch's import time): ARCH:CLASSES:SIZE:BATCH[:aux],... "
                        "each into OUT/ARCH")
    p.add_argument("--out", required=True)
    p.add_argument("--bench", default=None, help="directory of ref_satm.py (default: the first ../shared/bench above tools/)")
    a = p.parse_args()
    if a.bench is None:
        d = os.path.dirname(os.path.abspath(__file__))
        while d != os.path.dirname(d) and not os.path.isfile(os.path.join(d, "shared", "bench", "ref_satm.py")):
            d = os.path.dirname(d)
        a.bench = os.path.join(d, "shared", "bench")
    torch.set_num_threads(1)
    if a.many is None:
        if a.arch is None:
            p.error("--arch or --many is required")
        export(a)
        return
    for job in a.many.split(","):
        f = job.split(":")
        if len(f) not in (4, 5) or (len(f) == 5 and f[4] != "aux"):
            p.error(f"--many entry '{job}': expected ARCH:CLASSES:SIZE:BATCH[:aux]")
        one = argparse.Namespace(**vars(a))
        one.arch, one.classes, one.size, one.batch, one.aux = f[0], int(f[1]), int(f[2]), int(f[3]), len(f) == 5
        one.out = os.path.join(a.out, f[0])
        export(one)


def export(a):
    torch.manual_seed(a.seed)
    torch.set_num_threads(1)
    net = build(a.arch, a.classes, a.bench, a.aux)
    with torch.no_grad():
        # Random, well-scaled weights: default inits plus random BN affine and running statistics.
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5); m.bias.uniform_(-0.2, 0.2)
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                if a.arch in CPU_ARCHS:  # PyTorch's default init is fine; torchvision's is He-scaled already
                    m.weight.normal_(0, (2.0 / m.weight[0].numel()) ** 0.5)
                if m.bias is not None:  # torchvision zeroes biases: make them matter
                    m.bias.uniform_(-0.1, 0.1)
        # Running statistics from a few training-mode batches (cumulative average), so that eval-mode activations
        # stay O(1) through deep residual stacks and fp32 rounding stays far below the 1e-4 tolerance.
        bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
        for m in bns:
            m.reset_running_stats(); m.momentum = None
        net.train()
        # Statistics at a smaller size are as good for scaling and cheap; AuxLogits needs the full 299.
        cal, n = (a.size, 2) if a.aux else (min(a.size, 96), 8)
        net(torch.rand(n, 3, cal, cal))
        for m in bns:
            m.momentum = 0.1; m.num_batches_tracked.fill_(7)
    net.eval()
    x = torch.rand(a.batch, 3, a.size, a.size)
    with torch.no_grad():
        seen = {}
        if a.aux:
            hook = net.Mixed_6e.register_forward_hook(lambda m, i, o: seen.setdefault("x", o))
        f = features(net, a.arch, x)
        if a.aux:
            hook.remove()
        # torchvision ResNet / Inception: features() ran everything before fc (dropout is the identity in eval mode).
        logits = net.fc(f) if hasattr(net, "fc") else net(x)
        io = {"x": x, "logits": logits, "features": f}
        if a.arch in CPU_ARCHS:
            io["da"] = net.da(f)
        if a.arch == "inception_v3" and a.aux:
            # torchvision runs AuxLogits only in training mode; run it in eval mode on Mixed_6e's output.
            io["aux"] = net.AuxLogits(seen["x"])
    sd = {k: v.contiguous() for k, v in net.state_dict().items() if not k.startswith("da.")}
    os.makedirs(a.out, exist_ok=True)
    save_file(sd, os.path.join(a.out, "weights.safetensors"))
    if a.arch in CPU_ARCHS:
        da = {"da." + k: v.contiguous() for k, v in net.da.state_dict().items()}
        save_file(da, os.path.join(a.out, "da.safetensors"))
    if a.arch in CPU_ARCHS:
        # One training-mode forward: batch statistics in the output, running statistics and counters updated
        # (momentum 0.1, unbiased variance). Saved after weights.safetensors, whose tensors share this storage.
        net.train()
        with torch.no_grad():
            io["train_logits"] = net(x)
        after = {k: v.contiguous() for k, v in net.state_dict().items() if "running_" in k or "num_batches" in k}
        if after:
            save_file(after, os.path.join(a.out, "train_state.safetensors"))
    save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(a.out, "io.safetensors"))
    params = sum(p.numel() for n, p in net.named_parameters() if not n.startswith("da."))
    with open(os.path.join(a.out, "meta.json"), "w") as fh:
        json.dump(dict(arch=a.arch, classes=a.classes, size=a.size, param_count=params, feature_dim=f.shape[1],
                       keys=sorted(sd)), fh)


if __name__ == "__main__":
    main()
