"""The SATM step of shared/bench/ref_satm.py, run on given weights, batches and random steps, for tests/bench.rs.

usage: ref_step.py REF_SATM.py IN_DIR OUT_DIR [JOB.json]
JOB (default IN_DIR/job.json): {"archs": [...], "width", "classes", "k", "steps", "lr", "momentum", "eps", "alpha",
"r_adv", "r_da", "lambda", "noise"}; IN_DIR/steps.safetensors: per step s the batch "x.s" f32 [B, 3, H, W] in [0, 1]
and "y.s" i64 [B] in satm's order, and, when "noise" is true, "noise.s.k" f32 [B, 3, H, W], the N(0, I) draw of
R+Step-LL's random step on network k (satm's own draw, so both sides take the same random step; "noise": false lets
ref_satm draw its own, a control that must NOT match); IN_DIR/<arch>_net<k>.safetensors: network k's state
(ref_satm's state_dict names, DA head "da.*"). Writes OUT_DIR/<arch>_net<k>.safetensors (the updated state, BN
counters included) and OUT_DIR/losses.json ({arch: [[{clean_loss, adv_loss, da_loss, total_loss} per net] per step]}).

The step is ref_satm.py's `step` (a closure there, so it is repeated here line for line, with its hard-coded GRL
lambda 1.0 taken from the job); `r_step_ll`, `GRL`, `Block` and `Net` are imported from the file itself, and
`r_step_ll` runs unchanged with its `torch.randn_like` draw answered by the given noise. ref_satm.py builds full-width
networks only; `features` below builds the same layers with every channel count scaled by `width` (1.0 gives
ref_satm.py's `vgg_s` / `resnet_s` exactly).
"""
import importlib.util
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file


def load_ref(path):
    spec = importlib.util.spec_from_file_location("ref_satm", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def scaled(c, width):
    return max(1, int(c * width + 0.5))


def features(ref, arch, width):
    """ref_satm.vgg_s / resnet_s with scaled widths: same layer order, same module names."""
    if arch in ("vgg_s", "vggbn_s"):
        bn = arch == "vggbn_s"
        layers, c = [], 3
        for v in [64, 64, "M", 128, 128, "M", 256, 256, "M"]:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                v = scaled(v, width)
                layers += [nn.Conv2d(c, v, 3, padding=1)] + ([nn.BatchNorm2d(v)] if bn else []) + [nn.ReLU(inplace=True)]
                c = v
        h = scaled(512, width)
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, h), nn.ReLU(inplace=True)), h
    if arch == "resnet_s":
        s = scaled(64, width)
        layers = [nn.Conv2d(3, s, 3, 1, 1, bias=False), nn.BatchNorm2d(s), nn.ReLU(inplace=True)]
        c = s
        for i, w in enumerate([64, 128, 256, 512]):
            w = scaled(w, width)
            layers += [ref.Block(c, w, 1 if i == 0 else 2), ref.Block(w, w, 1)]
            c = w
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten()), c
    raise SystemExit(f"unknown arch {arch}")


def build(ref, arch, width, classes):
    net = ref.Net.__new__(ref.Net)  # ref_satm.Net's forward and attribute names, scaled layers
    nn.Module.__init__(net)
    net.features, d = features(ref, arch, width)
    net.head = nn.Linear(d, classes)
    net.da = nn.Sequential(nn.Linear(d, 256), nn.ReLU(inplace=True), nn.Linear(256, 1))
    return net


def r_step_ll(ref, net, x, y, eps, alpha, noise):
    """ref_satm.r_step_ll itself, its N(0, I) draw (`torch.randn_like(x)`) replaced by `noise` when given."""
    if noise is None:
        return ref.r_step_ll(net, x, y, eps, alpha)
    if noise.shape != x.shape:
        raise SystemExit(f"noise has shape {tuple(noise.shape)}, the batch {tuple(x.shape)}")
    real = torch.randn_like
    torch.randn_like = lambda t, *a, **kw: noise.clone()
    try:
        return ref.r_step_ll(net, x, y, eps, alpha)
    finally:
        torch.randn_like = real


def set_device(job):
    """The job's device ("cpu" by default, or "cuda:N"); on CUDA, TF32 off (satm's side turns it off too)."""
    dev = torch.device(job.get("device", "cpu"))
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(f"the job asks for {dev} but this torch sees no CUDA device")
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    return dev


def main():
    ref_path, in_dir, out_dir = sys.argv[1:4]
    ref = load_ref(ref_path)
    job = json.load(open(sys.argv[4] if len(sys.argv) > 4 else os.path.join(in_dir, "job.json")))
    steps = load_file(os.path.join(in_dir, "steps.safetensors"))
    k_n = job["k"]
    dev = set_device(job)
    steps = {n: t.to(dev) for n, t in steps.items()}
    torch.manual_seed(0)
    losses = {}
    for arch in job["archs"]:
        nets = []
        for k in range(k_n):
            net = build(ref, arch, job["width"], job["classes"])
            state = load_file(os.path.join(in_dir, f"{arch}_net{k}.safetensors"))
            net.load_state_dict(state)  # strict: every tensor, BN counters included
            nets.append(net.to(dev).train())
        opts = [torch.optim.SGD(n.parameters(), lr=job["lr"], momentum=job["momentum"]) for n in nets]
        per_step = []
        for it in range(job["steps"]):
            x, y = steps[f"x.{it}"], steps[f"y.{it}"]
            b = x.shape[0]
            noise = [steps[f"noise.{it}.{k}"] if job["noise"] else None for k in range(k_n)]
            # ref_satm.py's step (fp32, no autocast), recording the loss terms.
            advs = [r_step_ll(ref, n, x, y, job["eps"], job["alpha"], noise[k]) for k, n in enumerate(nets)]
            rec = []
            for k, n in enumerate(nets):
                src = advs[(k + 1 + it % (k_n - 1)) % k_n]
                fc, fa = n.features(x), n.features(src)
                lc = F.cross_entropy(n.head(fc), y)
                la = F.cross_entropy(n.head(fa), y)
                loss = lc + job["r_adv"] * la
                d = n.da(ref.GRL.apply(torch.cat([fc, fa]), job["lambda"])).squeeze(1)
                dom = torch.cat([torch.zeros(b, device=dev), torch.ones(b, device=dev)])
                ld = F.binary_cross_entropy_with_logits(d, dom)
                loss = loss + job["r_da"] * ld
                opts[k].zero_grad(set_to_none=True)
                loss.backward()
                opts[k].step()
                rec.append(dict(clean_loss=lc.item(), adv_loss=la.item(), da_loss=ld.item(), total_loss=loss.item()))
            per_step.append(rec)
        losses[arch] = per_step
        for k, n in enumerate(nets):
            sd = {name: t.detach().cpu().contiguous() for name, t in n.state_dict().items()}
            save_file(sd, os.path.join(out_dir, f"{arch}_net{k}.safetensors"))
    json.dump(losses, open(os.path.join(out_dir, "losses.json"), "w"))


if __name__ == "__main__":
    main()
