"""A small PyTorch trial for server mode on a GPU: an MLP on data it builds offline.

Reads its hyperparameters from the command line, trains on the GPU the agent gave it
(CUDA_VISIBLE_DEVICES) or on the CPU when there is none, reports the validation loss each epoch
with `rung:report` lines, and checkpoints every 3 epochs into RUNG_CHECKPOINT_DIR (restoring from
RUNG_RESTORE_DIR when it is relaunched).
"""

import argparse
import json
import os
import sys
import time

import torch
from torch import nn

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, required=True)
parser.add_argument("--hidden", type=int, default=256)
parser.add_argument("--epochs", type=int, default=12)
args = parser.parse_args()

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
print(
    f"trial {os.environ.get('RUNG_TRIAL_ID')} on {name} "
    f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')}, pid {os.getpid()})",
    file=sys.stderr,
    flush=True,
)

# The same synthetic task in every trial: 20k points, 64 features, 10 classes.
generator = torch.Generator().manual_seed(0)
features = torch.randn(20_000, 64, generator=generator)
teacher = torch.randn(64, 10, generator=generator)
labels = (features @ teacher + 0.5 * torch.randn(20_000, 10, generator=generator)).argmax(dim=1)
train_x, train_y = features[:16_000].to(device), labels[:16_000].to(device)
valid_x, valid_y = features[16_000:].to(device), labels[16_000:].to(device)

model = nn.Sequential(nn.Linear(64, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 10)).to(device)
optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
loss_fn = nn.CrossEntropyLoss()

start = 0
restore = os.environ.get("RUNG_RESTORE_DIR")
if restore:
    state = torch.load(os.path.join(restore, "model.pt"), map_location=device)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    start = state["epoch"]

for epoch in range(start + 1, args.epochs + 1):
    model.train()
    permutation = torch.randperm(train_x.shape[0], device=device)
    for batch in permutation.split(256):
        optimizer.zero_grad()
        loss_fn(model(train_x[batch]), train_y[batch]).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        logits = model(valid_x)
        loss = loss_fn(logits, valid_y).item()
        accuracy = (logits.argmax(dim=1) == valid_y).float().mean().item()
    checkpoint = epoch % 3 == 0
    if checkpoint:
        target = os.path.join(os.environ["RUNG_CHECKPOINT_DIR"], "model.pt")
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}, target)
    report = {"step": epoch, "loss": loss, "accuracy": accuracy, "checkpoint": checkpoint}
    print("rung:report " + json.dumps(report), flush=True)
    time.sleep(0.5)  # long enough for nvidia-smi to see four trials on the GPU at once
