"""PyTorch reference for tests/attacks.rs: FGSM, R+Step-LL (paper's Algorithm 1 and Tramer's least-likely variant)
and PGD on the test's tiny conv net, written straight from the papers' formulas.

usage: attacks_ref.py INPUT.safetensors OUTPUT.safetensors
INPUT holds the net's weights (conv1.*, conv2.*, fc.*), x [B,3,H,W], y [B], noise [B,3,H,W] and
params [eps, alpha, pgd_steps, pgd_step]. OUTPUT holds each attack's x_adv and the input gradient it took its sign of.
"""
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file


class Tiny(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, classes)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.avg_pool2d(x, 2)
        return self.fc(torch.flatten(x, 1))


def grad_of(model, x, y):
    x = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), y, reduction="sum")
    (g,) = torch.autograd.grad(loss, [x])
    return g


def project(x_adv, x, eps):
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0.0, 1.0)


def main():
    src, dst = sys.argv[1], sys.argv[2]
    t = load_file(src)
    x, y, noise = t["x"], t["y"], t["noise"]
    eps, alpha, steps, step = t["params"].tolist()
    steps = int(steps)
    model = Tiny(t["fc.weight"].shape[0])
    model.load_state_dict({k: v for k, v in t.items() if k.split(".")[0] in ("conv1", "conv2", "fc")})
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    out = {}

    # FGSM: x + eps * sign(grad J(x, y)).
    g = grad_of(model, x, y)
    out["fgsm_grad"] = g
    out["fgsm"] = project((x + eps * g.sign()).clamp(0.0, 1.0), x, eps)

    # R+Step-LL as the SATM paper writes it: x' = x + alpha * sign(N(0, I)); x' + (eps - alpha) * sign(grad J(x', y)).
    s = noise.sign()
    s = torch.where(s == 0, torch.ones_like(s), s)
    x1 = (x + alpha * s).clamp(0.0, 1.0)
    g = grad_of(model, x1, y)
    out["rsll_true_grad"] = g
    out["rsll_true"] = project((x1 + (eps - alpha) * g.sign()).clamp(0.0, 1.0), x, eps)

    # Tramer et al.: x' - (eps - alpha) * sign(grad J(x', y_LL)), y_LL the clean input's least-likely class.
    with torch.no_grad():
        y_ll = model(x).argmin(1)
    g = grad_of(model, x1, y_ll)
    out["rsll_ll_grad"] = g
    out["rsll_ll"] = project((x1 - (eps - alpha) * g.sign()).clamp(0.0, 1.0), x, eps)

    # PGD (Madry et al.): start at x + eps * u (u = noise clipped to [-1, 1]), signed steps, projection each step.
    xa = project(x + eps * noise.clamp(-1.0, 1.0), x, eps)
    for _ in range(steps):
        g = grad_of(model, xa, y)
        xa = project(xa + step * g.sign(), x, eps)
    out["pgd"] = xa

    save_file({k: v.contiguous() for k, v in out.items()}, dst)


if __name__ == "__main__":
    main()
