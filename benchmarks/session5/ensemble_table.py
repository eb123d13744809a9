"""Markdown tables from ensemble.py's JSON lines (LOG) plus the RMS difference between the saved
estimates (OUT/TAG_X.npy): how different two models' outputs are (0-255 units).
usage: ensemble_table.py LOG [OUT=/tmp/ens]"""
import sys, os, json, numpy as np
log = sys.argv[1]; out = sys.argv[2] if len(sys.argv) > 2 else "/tmp/ens"
runs, finals = {}, {}
for line in open(log):
    if not line.startswith("{"): continue
    d = json.loads(line)
    if "model" in d: runs.setdefault(d["tag"], {})[d["model"]] = d
    elif "result" in d: finals[d["tag"]] = d
for tag, f in finals.items():
    r, m = f["result"], runs[tag]
    print(f"\n### {tag} (auto p = {f['auto_patch']}, p2 = {f['p2']})\n")
    print("| estimate | models | MSE | PSNR dB | ΔPSNR vs A | CPU s |\n|---|---|---:|---:|---:|---:|")
    desc = {k: f"{v['preset']} p={v['patch']} seed {v['seed']}" for k, v in m.items()}
    for label, v in r.items():
        keys = [c for c in label if c in "ABCD"]
        cpu = sum(m[k]["cpu"] for k in keys)
        what = desc[label] if label in desc else "average"
        print(f"| {label} | {what} | {v['mse']:.2f} | {v['psnr']:.2f} | {v['psnr'] - r['A']['psnr']:+.2f} | {cpu:.0f} |")
    est = {k: np.load(os.path.join(out, f"{tag}_{k}.npy")) for k in "ABCD"}
    diff = {f"{a}-{b}": float(np.sqrt(((est[a] - est[b])**2).mean())) for a, b in ("AB", "AC", "AD")}
    print("\nRMS difference between estimates (0-255): " + ", ".join(f"{k} {v:.2f}" for k, v in diff.items()))
