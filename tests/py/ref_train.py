"""Standard training in plain PyTorch, for tests/train.rs: the reference that satm's trainer with r_adv = r_da = 0 must
equal.

usage: ref_train.py REF_SATM.py IN_DIR OUT_DIR
IN_DIR/job.json: {"arch", "width", "classes", "steps", "device" (optional: "cpu" or "cuda:N"), "runs": [{"name", "optimizer": "sgd" | "adam", "lr",
"momentum", "weight_decay"}]}; IN_DIR/init.safetensors: the network's initial state (ref_satm's state_dict names,
no DA head); IN_DIR/data.safetensors: the batch of each step s, "x.s" f32 [B, 3, H, W] in [0, 1] and "y.s" i64 [B].
Writes OUT_DIR/<name>.safetensors: the state after `steps` steps (BN counters included).

The network is ref_satm.py's (scaled widths, built by ref_step.py); the loop is PyTorch's textbook one:
F.cross_entropy, torch.optim.SGD(momentum, weight_decay) or torch.optim.Adam(weight_decay).
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ref_step  # noqa: E402


def main():
    ref_path, in_dir, out_dir = sys.argv[1:4]
    ref = ref_step.load_ref(ref_path)
    job = json.load(open(os.path.join(in_dir, "job.json")))
    dev = ref_step.set_device(job)
    data = {n: t.to(dev) for n, t in load_file(os.path.join(in_dir, "data.safetensors")).items()}
    for run in job["runs"]:
        net = ref_step.build(ref, job["arch"], job["width"], job["classes"])
        missing, unexpected = net.load_state_dict(load_file(os.path.join(in_dir, "init.safetensors")), strict=False)
        # The DA head is not part of standard training (satm builds none with r_da = 0).
        if unexpected or any(not m.startswith("da.") for m in missing):
            raise SystemExit(f"state mismatch: missing {missing}, unexpected {unexpected}")
        net = net.to(dev)
        params = [p for n, p in net.named_parameters() if not n.startswith("da.")]
        if run["optimizer"] == "sgd":
            opt = torch.optim.SGD(params, lr=run["lr"], momentum=run["momentum"], weight_decay=run["weight_decay"])
        else:
            opt = torch.optim.Adam(params, lr=run["lr"], weight_decay=run["weight_decay"])
        net.train()
        for step in range(job["steps"]):
            x, y = data[f"x.{step}"], data[f"y.{step}"]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
        sd = {n: t.detach().cpu().contiguous() for n, t in net.state_dict().items() if not n.startswith("da.")}
        save_file(sd, os.path.join(out_dir, f"{run['name']}.safetensors"))


if __name__ == "__main__":
    main()
