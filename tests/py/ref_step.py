"""The SATM step of shared/bench/ref_satm.py, run on given weights and a given batch, for tests/bench.rs.

usage: ref_step.py REF_SATM.py IN_DIR OUT_DIR
IN_DIR/job.json: {"archs": [...], "width", "classes", "k", "steps", "lr", "momentum", "eps", "alpha", "r_adv", "r_da",
"lambda"}; IN_DIR/batch.safetensors: "images" u8 [B, 3, H, W], "labels" i64 [B]; IN_DIR/<arch>_net<k>.safetensors:
network k's state (ref_satm's state_dict names, DA head "da.*"). Writes OUT_DIR/<arch>_net<k>.safetensors (the
updated state) and OUT_DIR/losses.json ({arch: [[{clean_loss, adv_loss, da_loss, total_loss} per net] per step]}).

The step is ref_satm.py's `step` (a closure there, so it is repeated here line for line), with its `r_step_ll`, `GRL`,
`Block` and `Net` imported from the file itself. ref_satm.py builds full-width networks only; `features` below builds
the same layers with every channel count scaled by `width` (1.0 gives ref_satm.py's `vgg_s` / `resnet_s` exactly).
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


def main():
    ref_path, in_dir, out_dir = sys.argv[1:4]
    ref = load_ref(ref_path)
    job = json.load(open(os.path.join(in_dir, "job.json")))
    batch = load_file(os.path.join(in_dir, "batch.safetensors"))
    x = batch["images"].float() / 255.0
    y = batch["labels"].long()
    b, k_n = x.shape[0], job["k"]
    torch.manual_seed(0)
    losses = {}
    for arch in job["archs"]:
        nets = []
        for k in range(k_n):
            net = build(ref, arch, job["width"], job["classes"])
            state = load_file(os.path.join(in_dir, f"{arch}_net{k}.safetensors"))
            missing, unexpected = net.load_state_dict(state, strict=False)
            missing = [m for m in missing if not m.endswith("num_batches_tracked")]
            if missing or unexpected:
                raise SystemExit(f"{arch}: state mismatch: missing {missing}, unexpected {unexpected}")
            nets.append(net.train())
        opts = [torch.optim.SGD(n.parameters(), lr=job["lr"], momentum=job["momentum"]) for n in nets]
        per_step = []
        for it in range(job["steps"]):
            # ref_satm.py's step (fp32, no autocast), recording the loss terms.
            advs = [ref.r_step_ll(n, x, y, job["eps"], job["alpha"]) for n in nets]
            rec = []
            for k, n in enumerate(nets):
                src = advs[(k + 1 + it % (k_n - 1)) % k_n]
                fc, fa = n.features(x), n.features(src)
                lc = F.cross_entropy(n.head(fc), y)
                la = F.cross_entropy(n.head(fa), y)
                loss = lc + job["r_adv"] * la
                d = n.da(ref.GRL.apply(torch.cat([fc, fa]), job["lambda"])).squeeze(1)
                dom = torch.cat([torch.zeros(b), torch.ones(b)])
                ld = F.binary_cross_entropy_with_logits(d, dom)
                loss = loss + job["r_da"] * ld
                opts[k].zero_grad(set_to_none=True)
                loss.backward()
                opts[k].step()
                rec.append(dict(clean_loss=lc.item(), adv_loss=la.item(), da_loss=ld.item(), total_loss=loss.item()))
            per_step.append(rec)
        losses[arch] = per_step
        for k, n in enumerate(nets):
            sd = {name: t.detach().contiguous() for name, t in n.state_dict().items() if not name.endswith("num_batches_tracked")}
            save_file(sd, os.path.join(out_dir, f"{arch}_net{k}.safetensors"))
    json.dump(losses, open(os.path.join(out_dir, "losses.json"), "w"))


if __name__ == "__main__":
    main()
