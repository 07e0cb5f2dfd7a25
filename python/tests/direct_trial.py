"""A trial launched by `rung agent` that reports to the controller over gRPC, not stdout."""

import rung

trial = rung.Client.this_trial()
for step in range(1, 4):
    decision = trial.report(step, loss=(trial.config["lr"] - 0.3) ** 2 + 1.0 / step)
    if decision != "continue":
        break
