"""A/B in one process: the session-3 estimate (old Dictionary build/scores, decode per state) vs this session's, on a saved fit; then the new one with keep_freed_memory."""
import os, sys, time, json
import numpy as np, torch
torch.set_num_threads(1)
from evodenoise import stream, model as M
from evodenoise.train import Fit
from evodenoise.stream import estimate_image, Dictionary
from evodenoise.evolution import unpack
path, name = sys.argv[1], sys.argv[2]
d = torch.load(path, weights_only=False)
cfg = d["cfg"]
new_init, new_scores, new_mean = Dictionary.__init__, Dictionary.scores, M.Decoder.mean
def old_init(self, fitted, size):
    model = fitted.model
    states = fitted.states.reshape(-1, fitted.states.shape[-1])
    uniq, counts = torch.unique(states, dim=0, return_counts=True)
    self.states = uniq[torch.topk(counts, min(size, counts.numel())).indices]
    s = unpack(self.states, model.pi.numel())
    self.mu = model.decoder(s); self.mu2 = self.mu * self.mu
    self.prior = model.log_prior(s); self.sigma2 = model.sigma2
def old_scores(self, y, obs):
    sq = self.mu2.sum(1)[None, :] - 2 * y @ self.mu.T
    return self.prior[None, :] - sq / (2 * self.sigma2)
def old_mean(self, s, q):
    return torch.einsum("bs,bsd->bd", q, self(s))
def use(old):
    Dictionary.__init__ = torch.no_grad()(old_init) if old else new_init
    Dictionary.scores = old_scores if old else new_scores
    M.Decoder.mean = old_mean if old else new_mean
def run(tag):
    gen = torch.Generator().manual_seed(0); gen.set_state(d["gen"])
    fitted = Fit(d["model"], d["states"].clone(), cfg)
    t0 = os.times()
    out = estimate_image(fitted, d["x"], None, d["pool"], cfg, gen)
    t1 = os.times()
    print(json.dumps({"fit": path, "variant": tag, "user": round(t1.user - t0.user, 1), "sys": round(t1.system - t0.system, 1)}), flush=True)
    return out
for rep in range(int(sys.argv[3]) if len(sys.argv) > 3 else 2):
    use(True); a = run("session3")
    use(False); b = run("session4")
print("max |diff| of estimates:", float((a - b).abs().max()))
from evodenoise.memory import keep_freed_memory; keep_freed_memory()
run("session4+keep_freed_memory")
